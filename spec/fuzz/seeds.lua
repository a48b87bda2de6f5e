-- spec/fuzz/seeds.lua -- writes the seed corpora of the fuzz targets:
--   spec/fuzz/wire/seed-*    real messages (weft.core._wire_encode of real
--                            Lua values, task messages, error records) and
--                            hand-made edge cases
--   spec/fuzz/frames/seed-*  a worker's side of the process-pool socket
--                            (the header frames_fuzz.c reads, then frames)
--   spec/fuzz/redis/seed-*   Redis task and result messages (rmsg.h's
--                            layout) behind the mode byte redis_fuzz.c reads
--   spec/fuzz/roundtrip/seed-*  programs that build values (roundtrip_fuzz.c)
-- Run from the top of the tree after `make`:
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 spec/fuzz/seeds.lua
-- It rewrites the seed-* files only; regression inputs (crash-*, and any
-- other name) are left alone.  Name targets to write only theirs:
--   ... lua5.4 spec/fuzz/seeds.lua redis  Rerun it when the wire format changes (the
-- bytes of tables' hash parts come out in an order that differs from run
-- to run: Lua seeds its string hashes per state).
local core = require "weft.core"
local enc = core._wire_encode

local here = arg[0]:match("^(.*)/[^/]*$") or "."

local only = {}
for _, t in ipairs(arg) do only[t] = true end
local function wanted(dir) return next(only) == nil or only[dir] end

local function write(dir, name, bytes)
  local f = assert(io.open(here .. "/" .. dir .. "/seed-" .. name, "wb"))
  f:write(bytes)
  f:close()
end

local function clear(dir)
  local p = io.popen("ls " .. here .. "/" .. dir .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("^seed%-") then os.remove(here .. "/" .. dir .. "/" .. name) end
  end
  p:close()
  os.execute("mkdir -p " .. here .. "/" .. dir)
end

-- === wire ==================================================================

local W = { NIL = 0, FALSE = 1, TRUE = 2, INT = 3, FLOAT = 4, STR = 5, TABLE = 6,
            FUNC = 7, REF = 8, UPREF = 9, ENV = 10, MODULE = 11, CFUNC = 12, DEP = 13,
            TASK = 14 }

local function leb(n)
  local out = {}
  repeat
    local b = n % 128
    n = n // 128
    out[#out + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(out)
end

local function str(s) return string.char(W.STR) .. leb(#s) .. s end

-- A message of hand-made values: header, count, items.
local function raw(flags, count, ...)
  return string.char(1, flags) .. leb(count) .. table.concat({ ... })
end

local messages = {}
local function add(name, bytes) messages[#messages + 1] = { name, bytes } end

-- Real values.
add("empty-tuple", enc())
add("nil", enc(nil))
add("scalars", enc(nil, true, false, 0, -1, math.maxinteger, math.mininteger, 1.5,
                   -0.0, 1 / 0, -1 / 0, 0 / 0, 2 ^ 53, "", "abc"))
add("binary-string", enc("\0\1\2\255" .. string.rep("x", 300)))
add("long-string", enc(string.rep("0123456789", 2000)))
add("array", enc({ 1, 2, 3, "four", 5.5, true }))
add("hash", enc({ a = 1, b = "two", [3.5] = true, [false] = 0, [-7] = "neg" }))
add("nested", enc({ a = { b = { c = { d = { 1, 2, { e = "deep" } } } } } }))
do
  local shared = { x = 1 }
  local cyc = { name = "cycle" }
  cyc.self = cyc
  add("shared-refs", enc({ shared, shared, { inner = shared } }, shared))
  add("cycle", enc(cyc))
end
do
  local deep = {}
  local t = deep
  for _ = 1, 200 do t.next = {}; t = t.next end
  add("deep-200", enc(deep))
end
add("function-plain", enc(function(a, b) return a + b end))
do
  local up1, up2 = 10, { k = "v" }
  local function f(x) return x + up1, up2 end
  add("function-upvalues", enc(f))
  local count = 0
  local function inc() count = count + 1; return count end
  local function get() return count end
  add("shared-upvalue", enc(inc, get))
  local function rec(n) if n > 0 then return rec(n - 1) end return 0 end
  add("recursive-function", enc(rec))
  add("function-in-table", enc({ fn = f, list = { inc, get } }))
  add("env-upvalue", enc(function() return print end))
end
add("modules", enc(string, math, table))
add("cfunctions", enc(print, string.format, math.floor, table.concat))
do   -- a weft.task travels with its metadata (TASK)
  local weft = require "weft"
  add("weft-task", enc(weft.task { function(x) return x + 1 end, name = "inc", timeout = 2,
                                   retries = 1 }))
end
-- Task messages (run.c): the kind byte, then the values.
local function task_call(...)
  local m = enc(...)
  return m:sub(1, 2) .. "\0" .. m:sub(3)
end
add("task-call", task_call(function(x, y) return x * y end, 6, 7))
add("task-call-closure", task_call(function(t) return #t end, { 1, 2, 3 }))
add("task-call-dep", string.char(1, 0, 0) .. leb(3) ..
    enc(function(a, b) return a, b end):sub(4) .. string.char(W.DEP) .. leb(0) ..
    string.char(W.DEP) .. leb(1))
add("task-chunk", (function()
  local fn = enc(function(x) return x + 1 end)
  return fn:sub(1, 2) .. "\1" .. fn:sub(4) .. "\0" .. leb(3) ..
         enc(1, 2, 3):sub(4)
end)())
-- Error records, as run.c and wire_record make them.
add("record-task", enc({ kind = "task", message = "boom", traceback = "stack traceback:\n\t[C]: in ?",
                         value = { code = 42 }, task = "t" }))
add("record-cause", enc({ kind = "dependency", message = "a dependency failed",
                          cause = { kind = "timeout", message = "slow", cause = { kind = "task",
                          message = "root" } } }))
do
  local r = { kind = "task", message = "loop" }
  r.cause = r
  add("record-cause-cycle", enc(r))
end
add("record-odd-fields", enc({ kind = "task", message = 42, task = {}, traceback = true }))
add("record-no-kind", enc({ message = "no kind" }))
add("record-not-table", enc("just a string"))

-- Hand-made edge cases.
add("bad-version", "\2\0" .. leb(0))
add("bad-flags", "\1\2" .. leb(0))
add("truncated-header", "\1")
add("empty", "")
add("count-too-big", raw(0, 1000))
add("trailing", enc(1) .. "\0")
add("size-overflow", raw(0, 1, string.char(W.STR), string.rep("\255", 10), "\1"))
add("size-huge", raw(0, 1, string.char(W.STR), leb(2 ^ 40)))
add("int-truncated", raw(0, 1, string.char(W.INT), "\1\2\3"))
add("table-huge-narray", raw(0, 1, string.char(W.TABLE), leb(2 ^ 31), "\0\0\0\0"))
add("table-huge-nhash", raw(0, 1, string.char(W.TABLE), leb(0), "\255\255\255\255"))
add("table-nil-key", raw(0, 1, string.char(W.TABLE), leb(0), "\1\0\0\0",
                         string.char(W.NIL), string.char(W.TRUE)))
add("table-nan-key", raw(0, 1, string.char(W.TABLE), leb(0), "\1\0\0\0",
                         string.char(W.FLOAT), string.pack("<d", 0 / 0), string.char(W.TRUE)))
add("ref-without-refs", raw(0, 1, string.char(W.REF), leb(0)))
add("ref-forward", raw(1, 1, string.char(W.TABLE + 128), leb(1), "\0\0\0\0",
                       string.char(W.REF), leb(5)))
add("ref-self", raw(1, 1, string.char(W.TABLE + 128), leb(1), "\0\0\0\0",
                    string.char(W.REF), leb(0)))
add("refd-without-flag", raw(0, 1, string.char(W.TABLE + 128), leb(0), "\0\0\0\0"))
add("unknown-tag", raw(0, 1, "\99"))
add("tag-15", raw(0, 1, "\15"))
add("task-truncated", raw(0, 1, string.char(W.TASK)))
add("task-plain-table", raw(0, 1, string.char(W.TASK), leb(0), "\1\0\0\0", str("name"), str("t")))
add("env-value", raw(0, 1, string.char(W.ENV)))
add("module-unknown", raw(0, 1, string.char(W.MODULE), leb(9), "no.such.m"))
add("module-string", raw(0, 1, string.char(W.MODULE), leb(6), "string"))
add("cfunc-no-dot", raw(0, 1, string.char(W.CFUNC), leb(5), "print"))
add("cfunc-unknown-lib", raw(0, 1, string.char(W.CFUNC), leb(7), "nope.fn"))
add("cfunc-unknown-fn", raw(0, 1, string.char(W.CFUNC), leb(10), "string.zzz"))
add("cfunc-not-function", raw(0, 1, string.char(W.CFUNC), leb(9), "math.huge"))
add("dep-out-of-range", raw(0, 1, string.char(W.DEP), leb(7)))
add("func-in-process", raw(0, 1, string.char(W.FUNC), "\0\0", string.rep("\0", 8)))
add("func-bad-kind", raw(0, 1, string.char(W.FUNC), "\0\2"))
add("func-garbage-code", raw(0, 1, string.char(W.FUNC), "\0\1", leb(5), "hello"))
add("func-wrong-upvalues", (function()
  local m = enc(function() return 1 end)   -- 0 or 1 upvalue (_ENV): claim 3
  local b = { m:byte(1, -1) }
  b[5] = 3
  return string.char(table.unpack(b))
end)())
do   -- nesting at the limit and past it
  local function nest(n)
    return raw(0, 1, string.rep(string.char(W.TABLE) .. leb(1) .. "\0\0\0\0", n), string.char(W.NIL))
  end
  add("nest-1000", nest(1000))
  add("nest-1001", nest(1001))
end
-- Every real message cut short at a few places.
for _, name in ipairs { "function-upvalues", "shared-refs", "record-task", "task-call" } do
  for _, m in ipairs(messages) do
    if m[1] == name then
      local b = m[2]
      for _, cut in ipairs { 3, #b // 3, #b // 2, #b - 1 } do
        add(name .. "-cut" .. cut, b:sub(1, cut))
      end
      break
    end
  end
end

if wanted("wire") then
  clear("wire")
  for _, m in ipairs(messages) do write("wire", m[1], m[2]) end
end

-- === frames ================================================================

local F = { READY = 4, DONE = 5, STOPPED = 6, RECALLED = 7, SKIPPED = 8, LOG = 9 }
local FS_FINISHED, FS_FAILED = 3, 4

local function frame(typ, body) return string.pack("<I4B", #body + 1, typ) .. body end
-- nsent flags base claims status
local function head(nsent, flags, base, claims, status)
  return string.pack("<BBI4I2B", nsent, flags, base, claims, status)
end
local ALL_STARTED, ALL_QUEUED = 0xAAAA, 0x5555

local frames = {}
local function addf(name, bytes) frames[#frames + 1] = { name, bytes } end

local results = enc(42, "ok", { t = true })
local record = enc({ kind = "task", message = "boom", traceback = "tb", value = { 1 } })
addf("ready-done", head(1, 1, 0, ALL_STARTED, 0) ..
     frame(F.DONE, string.pack("<I4B", 0, FS_FINISHED) .. results))
addf("ready-then-done", head(1, 0, 7, ALL_STARTED, 0) .. frame(F.READY, "") ..
     frame(F.DONE, string.pack("<I4B", 7, FS_FINISHED) .. results))
addf("done-failed", head(1, 1, 0, ALL_STARTED, 0) ..
     frame(F.DONE, string.pack("<I4B", 0, FS_FAILED) .. record))
do   -- a batch of answers, ids wrapping around
  local b = { head(8, 1 + 32, 0xfffffffc, ALL_STARTED, 0) }
  for k = 0, 7 do
    b[#b + 1] = frame(F.LOG, string.pack("<I4BI4I4", (0xfffffffc + k) % 2 ^ 32, 20, 1000, 0) .. "log " .. k)
    b[#b + 1] = frame(F.DONE, string.pack("<I4B", (0xfffffffc + k) % 2 ^ 32, FS_FINISHED) .. enc(k))
  end
  addf("batch-wrap", table.concat(b))
end
addf("stopped-timeout", head(2, 1 + 4, 5, ALL_STARTED, 0) .. frame(F.STOPPED, string.pack("<I4", 5)))
addf("stopped-cancel", head(2, 1 + 8, 5, ALL_STARTED, 0) .. frame(F.STOPPED, string.pack("<I4", 5)))
addf("stopped-outside", head(1, 1, 5, ALL_STARTED, 15) .. frame(F.STOPPED, string.pack("<I4", 5)))
addf("skipped", head(2, 1 + 64, 3, 0xFFFF, 0) .. frame(F.SKIPPED, string.pack("<I4", 3)))
addf("recalled", head(4, 1 + 2, 10, 0x5556, 0) ..
     frame(F.RECALLED, string.pack("<I4I4I4I4", 3, 11, 12, 13)))
addf("log-levels", head(1, 1, 0, ALL_STARTED, 0) ..
     frame(F.LOG, string.pack("<I4BI4I4", 0, 10, 1, 2) .. "debug") ..
     frame(F.LOG, string.pack("<I4BI4I4", 0, 40, 0xffffffff, 0xffffffff) .. "error") ..
     frame(F.DONE, string.pack("<I4B", 0, FS_FINISHED)))
addf("died-running", head(3, 1 + 32, 0, 0x5556, 128 + 9) .. frame(F.DONE, string.pack("<I4B", 0, FS_FINISHED) .. results))
addf("died-before-ready", head(2, 0, 0, ALL_QUEUED, 1))
addf("abort-hand-back", head(5, 1 + 16, 100, ALL_QUEUED, 128 + 15))
-- Malformed: each gets the worker killed.
addf("bad-size-zero", head(1, 1, 0, ALL_STARTED, 0) .. string.pack("<I4", 0))
addf("bad-size-huge", head(1, 1, 0, ALL_STARTED, 0) .. string.pack("<I4B", 0x7fffffff, F.DONE))
addf("bad-type", head(1, 1, 0, ALL_STARTED, 0) .. frame(200, "xyz"))
addf("bad-ready-twice", head(1, 0, 0, ALL_STARTED, 0) .. frame(F.READY, "") .. frame(F.READY, ""))
addf("bad-ready-body", head(1, 0, 0, ALL_STARTED, 0) .. frame(F.READY, "x"))
addf("bad-done-id", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.DONE, string.pack("<I4B", 9, FS_FINISHED)))
addf("bad-done-state", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.DONE, string.pack("<I4B", 0, 9)))
addf("bad-done-short", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.DONE, "\0\0"))
addf("bad-done-nothing-sent", head(0, 1, 0, 0, 0) .. frame(F.DONE, string.pack("<I4B", 0, FS_FINISHED)))
addf("bad-recalled-count", head(2, 1 + 2, 0, ALL_QUEUED, 0) .. frame(F.RECALLED, string.pack("<I4", 1000)))
addf("bad-recalled-unasked", head(2, 1, 0, ALL_QUEUED, 0) .. frame(F.RECALLED, string.pack("<I4I4", 1, 1)))
addf("bad-skipped-claim", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.SKIPPED, string.pack("<I4", 0)))
addf("bad-log-level", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.LOG, string.pack("<I4BI4I4", 0, 99, 0, 0)))
addf("bad-log-short", head(1, 1, 0, ALL_STARTED, 0) .. frame(F.LOG, "\0"))
addf("partial-frame", head(1, 1, 0, ALL_STARTED, 0) .. string.pack("<I4B", 100, F.DONE) .. "abc")
addf("done-garbage-outcome", head(1, 1, 0, ALL_STARTED, 0) ..
     frame(F.DONE, string.pack("<I4B", 0, FS_FINISHED) .. "\1\0\5\6\255\255"))
addf("done-failed-garbage", head(1, 1, 0, ALL_STARTED, 0) ..
     frame(F.DONE, string.pack("<I4B", 0, FS_FAILED) .. enc("not a record")))

if wanted("frames") then
  clear("frames")
  for _, m in ipairs(frames) do write("frames", m[1], m[2]) end
end

-- === redis =================================================================
-- rmsg.h, byte for byte:
--   task   := "WFT" version:u8 'T' id:str reply:str nonce:str expires:f64
--             name:str timeout:f64 retries:u32 ndelays:u32 delay:f64*
--             max_deliveries:u32 ttl:u32 level:u8 ndeps:u32 dep:str*
--             message:str
--   result := "WFT" version:u8 'R' id:str nonce:str state:u8 flags:u8
--             deliveries:u32 worker:str started:f64 finished:f64 outcome:str
--   log    := "WFT" version:u8 'L' id:str nonce:str level:u8 attempt:u32
--             time:f64 worker:str message:str
--   notice := "WFT" version:u8 'X' id:str nonce:str reason:u8 at:f64
--             worker:str entry:str
-- then the mode byte of redis_fuzz.c in front (a log or notice element is
-- read in result mode, as every element of a client's list is).  No HMAC here: a signed
-- seed asks the harness to sign it (RESIGN); a signature given in the
-- input is only ever a wrong one.
local RMSG_VERSION = 2
local NONCE = "\1\35\69\103\137\171\205\239\254\220\186\152\118\84\50\16"   -- 16 bytes
local FS_CANCELLED = 5
local RMSG_TIMED_OUT, RMSG_DEAD = 1, 2
local M = { RESULT = 1, KEY = 2, SIG = 4, RESIGN = 8, WRONG_KEY = 16, DECODE = 32 }
local SIGNED = M.KEY + M.SIG + M.RESIGN

local function task_msg(o)
  local delays = o.delays or {}
  local deps = o.deps or {}
  local b = { "WFT", string.char(o.version or RMSG_VERSION), o.type or "T",
              string.pack("<s4s4s4ds4dI4I4", o.id or "c0ffee-1", o.reply or "weft:r:c0ffee",
                          o.nonce or NONCE, o.expires or 1.7e9 + 86400, o.name or "",
                          o.timeout or -1, o.retries or 0, o.ndelays or #delays) }
  for _, d in ipairs(delays) do b[#b + 1] = string.pack("<d", d) end
  b[#b + 1] = string.pack("<I4I4BI4", o.max_deliveries or 3, o.ttl or 86400, o.level or 20,
                          o.ndeps or #deps)
  for _, d in ipairs(deps) do b[#b + 1] = string.pack("<s4", d) end
  b[#b + 1] = string.pack("<s4", o.message or "")
  return table.concat(b)
end

local function result_msg(o)
  return "WFT" .. string.char(o.version or RMSG_VERSION) .. (o.type or "R") ..
         string.pack("<s4s4BBI4s4dds4", o.id or "c0ffee-1", o.nonce or NONCE,
                     o.state or FS_FINISHED, o.flags or 0, o.deliveries or 1,
                     o.worker or "host:4242", o.started or 1.7e9, o.finished or 1.7e9 + 0.25,
                     o.outcome or "")
end

local function log_msg(o)
  return "WFT" .. string.char(o.version or RMSG_VERSION) .. (o.type or "L") ..
         string.pack("<s4s4BI4ds4s4", o.id or "c0ffee-1", o.nonce or NONCE, o.level or 20,
                     o.attempt or 1, o.time or 1.7e9, o.worker or "host:4242 process 7",
                     o.message or "hello")
end

local function notice_msg(o)
  return "WFT" .. string.char(o.version or RMSG_VERSION) .. (o.type or "X") ..
         string.pack("<s4s4Bds4s4", o.id or "c0ffee-1", o.nonce or NONCE, o.reason or 1,
                     o.at or 1.7e9, o.worker or "host:4242", o.entry or "1700000000000-0")
end

local redis = {}
local function addr(name, mode, bytes) redis[#redis + 1] = { name, string.char(mode) .. bytes } end

local call = task_call(function(x, y) return x * y end, 6, 7)
local call_deps = string.char(1, 0, 0) .. leb(4) ..
    enc(function(a, b, c) return a, b, c end):sub(4) .. string.char(W.DEP) .. leb(0) ..
    string.char(W.DEP) .. leb(1) .. string.char(W.DEP) .. leb(2)
local dep_results = { enc(1, "one"), enc({ two = 2 }), enc(nil) }
local tasks = {
  { "task-0-deps", { message = call, name = "mul" } },
  { "task-1-dep", { message = string.char(1, 0, 0) .. leb(2) ..
                      enc(function(x) return x end):sub(4) .. string.char(W.DEP) .. leb(0),
                    deps = { enc(42) } } },
  { "task-3-deps", { message = call_deps, deps = dep_results, name = "join", timeout = 30 } },
  { "task-delays", { message = call, retries = 3, delays = { 0.5, 1, 2.5 }, timeout = 5,
                     max_deliveries = 5 } },
  { "task-max-delays", { message = call, retries = 32, delays = (function()
      local d = {}
      for i = 1, 32 do d[i] = i / 4 end
      return d
    end)() } },
  { "task-chunk", { message = (function()
      local fn = enc(function(x) return x + 1 end)
      return fn:sub(1, 2) .. "\1" .. fn:sub(4) .. "\0" .. leb(3) .. enc(1, 2, 3):sub(4)
    end)(), name = "map", level = 10 } },
}
for _, t in ipairs(tasks) do
  local m = task_msg(t[2])
  addr(t[1], 0, m)
  addr(t[1] .. "-decode", M.DECODE, m)
  addr(t[1] .. "-signed", SIGNED + M.DECODE, m)
  -- (a reader without a secret refuses a signed task: RMSG_R_NO_SECRET)
  addr(t[1] .. "-unkeyed-sig", M.SIG, string.char(32) .. string.rep("\0", 32) .. m)
end
local t0 = task_msg(tasks[1][2])
local t3 = task_msg(tasks[3][2])
-- The verifier refuses.
addr("task-keyed-unsigned", M.KEY, t0)
addr("task-keyed-bad-sig", M.KEY + M.SIG, string.char(32) .. string.rep("\7", 32) .. t0)
addr("task-keyed-short-sig", M.KEY + M.SIG, string.char(31) .. string.rep("\7", 31) .. t0)
addr("task-keyed-long-sig", M.KEY + M.SIG, string.char(33) .. string.rep("\7", 33) .. t0)
addr("task-keyed-no-sig-bytes", M.KEY + M.SIG, "")
addr("task-wrong-key", SIGNED + M.WRONG_KEY, t3)
addr("task-signed-unkeyed", M.SIG + M.RESIGN, t3)
-- Malformed tasks (each unsigned and signed).
local bad_tasks = {
  { "wrong-magic", "WFX" .. t0:sub(4) },
  { "wrong-version", task_msg { version = 3, message = call } },
  { "version-1", task_msg { version = 1, message = call } },
  { "nonce-short", task_msg { nonce = "short", message = call } },
  { "nonce-long", task_msg { nonce = NONCE .. "x", message = call } },
  { "expires-nan", task_msg { expires = 0 / 0, message = call } },
  { "expires-negative", task_msg { expires = -1, message = call } },
  { "expires-huge", task_msg { expires = 1e11, message = call } },
  { "wrong-type", task_msg { type = "R", message = call } },
  { "empty", "" },
  { "trailing", t3 .. "\0" },
  { "id-empty", task_msg { id = "", message = call } },
  { "id-200", task_msg { id = string.rep("i", 200), message = call } },
  { "id-201", task_msg { id = string.rep("i", 201), message = call } },
  { "reply-empty", task_msg { reply = "", message = call } },
  { "reply-401", task_msg { reply = string.rep("r", 401), message = call } },
  { "timeout-nan", task_msg { timeout = 0 / 0, message = call } },
  { "timeout-inf", task_msg { timeout = 1 / 0, message = call } },
  { "timeout-neg-inf", task_msg { timeout = -1 / 0, message = call } },
  { "timeout-big", task_msg { timeout = 1e9 + 1, message = call } },
  { "retries-big", task_msg { retries = 1000001, message = call } },
  { "delays-33", task_msg { ndelays = 33, delays = {}, message = call } },
  { "delay-negative", task_msg { delays = { 1, -1 }, message = call } },
  { "delay-nan", task_msg { delays = { 0 / 0 }, message = call } },
  { "ndelays-huge", task_msg { ndelays = 0xffffffff, message = call } },
  { "ndeps-huge", task_msg { ndeps = 0xffffffff, message = call } },
  { "ndeps-over-max", task_msg { ndeps = 100001, message = call } },
  { "ndeps-more-than-there", task_msg { ndeps = 4, deps = dep_results, message = call } },
  { "ndeps-fewer-than-there", task_msg { ndeps = 2, deps = dep_results, message = call } },
  { "id-len-huge", "WFT\2T" .. string.pack("<I4", 0xffffffff) .. "x" },
  { "dep-len-huge", task_msg { message = call }:sub(1, -(#call + 9)) .. string.pack("<I4I4", 1, 0xfffffff0) },
  { "message-len-huge", task_msg { message = call }:sub(1, -(#call + 5)) .. string.pack("<I4", 0xffffffff) .. call },
  { "message-len-short", task_msg { message = call }:sub(1, -(#call + 5)) .. string.pack("<I4", #call - 1) .. call },
  { "level-max", task_msg { level = 255, message = "" } },
  { "ttl-zero", task_msg { ttl = 0, message = call } },
  { "ttl-max", task_msg { ttl = 0xffffffff, max_deliveries = 0xffffffff, message = call } },
  { "message-empty", task_msg { message = "" } },
}
for _, t in ipairs(bad_tasks) do
  addr("task-" .. t[1], 0, t[2])
  addr("task-" .. t[1] .. "-signed", SIGNED, t[2])
end
for _, cut in ipairs { 4, 5, 9, 20, #t3 // 2, #t3 - #call_deps - 1, #t3 - 1 } do
  addr("task-cut" .. cut, 0, t3:sub(1, cut))
  addr("task-cut" .. cut .. "-signed", SIGNED, t3:sub(1, cut))
end

-- Results: a finished one's encoded values, a failed one's error record, a
-- cancelled one's nothing.
local rec = enc({ kind = "task", message = "boom", traceback = "stack traceback:\n\t[C]: in ?",
                  task = "c0ffee-1" })
local results_ = {
  { "result-finished", { state = FS_FINISHED, outcome = enc(42, "ok", { t = true }) } },
  { "result-finished-nil", { state = FS_FINISHED, outcome = enc() } },
  { "result-failed", { state = FS_FAILED, outcome = rec, deliveries = 3 } },
  { "result-failed-timeout", { state = FS_FAILED, flags = RMSG_TIMED_OUT,
                               outcome = enc({ kind = "timeout", message = "task timed out" }) } },
  { "result-failed-dead", { state = FS_FAILED, flags = RMSG_DEAD, deliveries = 4,
                            outcome = enc({ kind = "worker", message = "the worker died" }) } },
  { "result-cancelled", { state = FS_CANCELLED, outcome = "", worker = "" } },
}
for _, r in ipairs(results_) do
  local m = result_msg(r[2])
  addr(r[1], M.RESULT + M.DECODE, m)
  addr(r[1] .. "-signed", M.RESULT + M.KEY + M.RESIGN + M.DECODE, m)
end
local r0 = result_msg(results_[1][2])
addr("result-keyed-unsigned", M.RESULT + M.KEY, r0)
addr("result-keyed-bad-sig", M.RESULT + M.KEY, r0 .. string.rep("\7", 32))
addr("result-keyed-short", M.RESULT + M.KEY, string.rep("\7", 31))
addr("result-wrong-key", M.RESULT + M.KEY + M.RESIGN + M.WRONG_KEY, r0)
addr("result-signed-unkeyed", M.RESULT + M.RESIGN, r0)
local bad_results = {
  { "wrong-magic", "XFT" .. r0:sub(4) },
  { "wrong-version", result_msg { version = 1, outcome = enc(1) } },
  { "nonce-short", result_msg { nonce = "n", outcome = enc(1) } },
  { "wrong-type", result_msg { type = "T", outcome = enc(1) } },
  { "empty", "" },
  { "trailing", r0 .. "\0" },
  { "state-pending", result_msg { state = 0, outcome = enc(1) } },
  { "state-settling", result_msg { state = 2, outcome = enc(1) } },
  { "state-6", result_msg { state = 6, outcome = enc(1) } },
  { "flags-all", result_msg { flags = 255, outcome = enc(1) } },
  { "finished-no-outcome", result_msg { state = FS_FINISHED, outcome = "" } },
  { "failed-no-outcome", result_msg { state = FS_FAILED, outcome = "" } },
  { "cancelled-outcome", result_msg { state = FS_CANCELLED, outcome = rec } },
  { "finished-garbage", result_msg { state = FS_FINISHED, outcome = "\1\0\5\6\255\255" } },
  { "id-len-huge", "WFT\2R" .. string.pack("<I4", 0xffffffff) .. "x" },
  { "outcome-len-huge", r0:sub(1, -(#enc(42, "ok", { t = true }) + 5)) .. string.pack("<I4", 0xffffffff) },
}
for _, r in ipairs(bad_results) do
  addr("result-" .. r[1], M.RESULT + M.DECODE, r[2])
  addr("result-" .. r[1] .. "-signed", M.RESULT + M.KEY + M.RESIGN + M.DECODE, r[2])
end
for _, cut in ipairs { 4, 5, 9, 20, #r0 // 2, #r0 - 1 } do
  addr("result-cut" .. cut, M.RESULT, r0:sub(1, cut))
  addr("result-cut" .. cut .. "-signed", M.RESULT + M.KEY + M.RESIGN, r0:sub(1, cut))
end

-- Log records (signed like results) and refusal notices (never signed).
local l0 = log_msg {}
addr("log-info", M.RESULT, l0)
addr("log-info-signed", M.RESULT + M.KEY + M.RESIGN, l0)
addr("log-keyed-unsigned", M.RESULT + M.KEY, l0)
addr("log-empty-message", M.RESULT, log_msg { message = "" })
addr("log-trailing", M.RESULT, l0 .. "\0")
addr("log-truncated", M.RESULT, l0:sub(1, -3))
addr("log-message-len-huge", M.RESULT, l0:sub(1, -10) .. string.pack("<I4", 0xffffffff))
addr("log-nonce-short", M.RESULT, log_msg { nonce = "n" })
for reason = 1, 6 do
  addr("notice-reason" .. reason, M.RESULT, notice_msg { reason = reason })
end
local n0 = notice_msg {}
addr("notice-keyed", M.RESULT + M.KEY, n0)
addr("notice-signed", M.RESULT + M.KEY + M.RESIGN, n0)
addr("notice-version-3", M.RESULT, notice_msg { version = 3 })
addr("notice-version-1", M.RESULT, notice_msg { version = 1 })
addr("notice-reason-0", M.RESULT, notice_msg { reason = 0 })
addr("notice-reason-7", M.RESULT, notice_msg { reason = 7 })
addr("notice-id-empty", M.RESULT, notice_msg { id = "" })
addr("notice-nonce-short", M.RESULT, notice_msg { nonce = "n" })
addr("notice-at-nan", M.RESULT, notice_msg { at = 0 / 0 })
addr("notice-worker-201", M.RESULT, notice_msg { worker = string.rep("w", 201) })
addr("notice-entry-49", M.RESULT, notice_msg { entry = string.rep("1", 49) })
addr("notice-binary-worker", M.RESULT, notice_msg { worker = "\0\27[31mred\255" })
addr("notice-trailing", M.RESULT, n0 .. "\0")
addr("notice-truncated", M.RESULT, n0:sub(1, -2))

if wanted("redis") then
  clear("redis")
  for _, m in ipairs(redis) do write("redis", m[1], m[2]) end
end
-- === roundtrip =============================================================
-- Programs for roundtrip_fuzz.c (its opcodes are listed at its top): the
-- table layouts that once lost keys, sharing, cycles, cells, typed tables.

local OP = { NIL = 0, FALSE = 1, TRUE = 2, INT8 = 3, INT64 = 4, FLOAT = 5, STR = 6, NEW = 7,
             SET = 8, SETI = 9, OBJ = 10, POP = 11, FN = 12, CELL = 13, TYPED = 14,
             EDGE = 15, FILL = 16 }
local function prog(...)
  local out = {}
  for _, x in ipairs { ... } do
    out[#out + 1] = type(x) == "number" and string.char(x) or x
  end
  return table.concat(out)
end
local function pstr(s) return prog(OP.STR, #s) .. s end
local roundtrip = {
  -- {[1] = 0, label = "kept"} with key 1 set after the hash key
  { "key1-in-hash", prog(OP.NEW) .. pstr("label") .. pstr("kept") .. prog(OP.SET, OP.INT8, 1, OP.INT8, 0, OP.SET) },
  -- math.maxinteger as a key beside 1
  { "maxinteger-key", prog(OP.NEW, OP.EDGE, 0, OP.TRUE, OP.SET, OP.INT8, 1, OP.FALSE, OP.SET) .. pstr("x") .. prog(OP.INT8, 3, OP.SET) },
  -- an array with holes punched, then keys re-added
  { "holes", prog(OP.NEW, OP.FILL, 20, OP.INT8, 5, OP.NIL, OP.SET, OP.INT8, 9, OP.NIL, OP.SET, OP.INT8, 25, OP.TRUE, OP.SET, OP.INT8, 5, OP.TRUE, OP.SET) },
  -- a cycle and a shared table
  { "cycle", prog(OP.NEW, OP.NEW, OP.OBJ, 0, OP.SETI, 1, OP.SETI, 2, OP.OBJ, 1, OP.OBJ, 1) },
  -- a table as a key, reached as a value too
  { "table-key", prog(OP.NEW, OP.NEW, OP.TRUE, OP.SET, OP.OBJ, 1) },
  -- functions: a pair of upvalues, a shared cell
  { "functions", prog(OP.INT8, 7) .. pstr("s") .. prog(OP.FN, OP.TRUE, OP.CELL, OP.NEW, OP.OBJ, 1, OP.SETI, 1) },
  -- typed tables: registered and not
  { "typed", prog(OP.TYPED, 1, OP.INT8, 1, OP.INT8, 2, OP.SET, OP.TYPED, 0, OP.INT8, 1, OP.INT8, 2, OP.SET) },
  -- every float edge
  { "floats", prog(OP.FLOAT) .. string.pack("<d", -0.0) .. prog(OP.FLOAT) .. string.pack("<d", 1 / 0) ..
      prog(OP.FLOAT) .. string.pack("<d", 0 / 0) .. prog(OP.FLOAT) .. string.pack("<d", 2 ^ 63) },
}
if wanted("roundtrip") then
  clear("roundtrip")
  for _, m in ipairs(roundtrip) do write("roundtrip", m[1], m[2]) end
end

local wrote = {}
for _, c in ipairs { { "wire", messages }, { "frames", frames }, { "redis", redis }, { "roundtrip", roundtrip } } do
  if wanted(c[1]) then wrote[#wrote + 1] = ("%d %s seeds"):format(#c[2], c[1]) end
end
print("wrote " .. table.concat(wrote, ", "))
