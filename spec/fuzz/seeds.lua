-- spec/fuzz/seeds.lua -- writes the seed corpora of the fuzz targets:
--   spec/fuzz/wire/seed-*    real messages (weft.core._wire_encode of real
--                            Lua values, task messages, error records) and
--                            hand-made edge cases
--   spec/fuzz/frames/seed-*  a worker's side of the process-pool socket
--                            (the header frames_fuzz.c reads, then frames)
-- Run from the top of the tree after `make`:
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 spec/fuzz/seeds.lua
-- It rewrites the seed-* files only; regression inputs (crash-*, and any
-- other name) are left alone.  Rerun it when the wire format changes (the
-- bytes of tables' hash parts come out in an order that differs from run
-- to run: Lua seeds its string hashes per state).
local core = require "weft.core"
local enc = core._wire_encode

local here = arg[0]:match("^(.*)/[^/]*$") or "."

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

clear("wire")
for _, m in ipairs(messages) do write("wire", m[1], m[2]) end

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

clear("frames")
for _, m in ipairs(frames) do write("frames", m[1], m[2]) end
print(("wrote %d wire seeds, %d frames seeds"):format(#messages, #frames))
