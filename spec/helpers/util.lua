-- helpers/util.lua -- small shared pieces for the weft specs.
--
--   util.catch(fn, ...)            -> the error fn raised (fails if it did not)
--   util.expect_error(kind, fn, ...) -> the weft.Error of that kind fn raised
--   util.text(v)                   -> everything printable about an error
--   util.mentions(v, text)         -> util.text(v) contains text (plain)
--   util.track(ex), util.threads(opts), util.future()
--                                  -> an executor / bare future that
--                                     util.cleanup() will shut down / settle
--   util.cleanup()                 -> for after_each: settle tracked futures,
--                                     open every gate, shut tracked executors
--   util.tmpname(), util.exists(path)
--   util.read(path)                -> the file's bytes, or nil if it cannot be read
--   util.write_temp(text [, suffix]) -> a fresh file holding text (cleaned up)
--   util.quote(s)                  -> s quoted for sh
--   util.run_lua(source)           -> output (stdout + stderr) of a child lua5.4
--   util.online_cpus()
--   util.self_pid(), util.spin(seconds)
--                                  -> for tasks too (see below)

local weft = require "weft"
local gate = require "helpers.gate"

local util = {}

-- Calls fn(...) and returns the error it raised; fails the spec if it
-- returned normally.
function util.catch(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then error("expected an error, but the call returned normally", 2) end
  return err
end

-- Everything printable about an error value: tostring, message, value,
-- traceback, cause (recursively), for "mentions" checks.
function util.text(v, depth)
  depth = depth or 0
  if depth > 5 then return "" end
  local parts = { tostring(v) }
  if type(v) == "table" then
    for _, k in ipairs { "message", "value", "traceback", "cause" } do
      local x = v[k]
      if x ~= nil then parts[#parts + 1] = util.text(x, depth + 1) end
    end
  end
  return table.concat(parts, "\n")
end

local function describe_error(err)
  local ok, s = pcall(util.text, err)
  return ok and s or ("<" .. type(err) .. ">")
end

-- Calls fn(...) and returns the error, which must be a weft.Error of `kind`.
function util.expect_error(kind, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    error(("expected a weft error of kind %q, but the call returned normally")
      :format(kind), 2)
  end
  if not weft.is(err, kind) then
    error(("expected a weft error of kind %q, got: %s"):format(
      kind, describe_error(err)), 2)
  end
  assert(getmetatable(err) == weft.Error, "weft error without weft.Error metatable")
  return err
end

-- True when `text` (plain) occurs in what `v` prints as.
function util.mentions(v, text)
  return util.text(v):find(text, 1, true) ~= nil
end

local tracked_executors, tracked_futures, tmpnames = {}, {}, {}

-- Remembers an executor: util.cleanup() shuts it down.
function util.track(ex)
  tracked_executors[#tracked_executors + 1] = ex
  return ex
end

-- A tracked weft.threads pool.
function util.threads(opts)
  return util.track(weft.threads(opts or {}))
end

-- A tracked bare future: util.cleanup() cancels it (or fails it, if it was
-- set running) when the spec left it unfinished, so that tasks depending on
-- it finish and their pool can shut down.
function util.future()
  local f = weft.future()
  tracked_futures[#tracked_futures + 1] = f
  return f
end

-- For after_each: settle tracked futures, open every gate, then shut down
-- every tracked executor (waiting for its workers).
function util.cleanup()
  local first_err
  for _, f in ipairs(tracked_futures) do
    local ok, err = pcall(function()
      if not f:done() and not f:cancel() then
        f:set_exception("left unfinished by the spec")
      end
    end)
    if not ok then first_err = first_err or err end
  end
  tracked_futures = {}
  gate.close_all()
  local exs = tracked_executors
  tracked_executors = {}
  for _, ex in ipairs(exs) do
    local ok, err = pcall(ex.shutdown, ex, { wait = true })
    if not ok then first_err = first_err or err end
  end
  for _, name in ipairs(tmpnames) do os.remove(name) end
  tmpnames = {}
  if first_err ~= nil then error(first_err, 0) end
end

-- A fresh path in /tmp (no file there yet); util.cleanup() removes it.
function util.tmpname()
  local name = os.tmpname()
  os.remove(name)
  tmpnames[#tmpnames + 1] = name
  return name
end

function util.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

function util.write_temp(text, suffix)
  local path = util.tmpname() .. (suffix or "")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  tmpnames[#tmpnames + 1] = path
  return path
end

function util.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function util.exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end

-- Two functions tasks capture as upvalues and take to their workers: their
-- only upvalue is _ENV, so they run on the worker's own io and os.

-- The pid of the process that runs this code.
function util.self_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

-- Spins for about `seconds` (wall clock), then returns.  Only a bound for a
-- runtime that fails to stop the task: never relied on for correctness.
function util.spin(seconds)
  local stop = os.time() + seconds
  while os.time() < stop do end
end

-- Runs `source` in a child lua5.4 with this process's package paths and
-- returns everything it printed on stdout and stderr, and whether it exited
-- successfully.
function util.run_lua(source, env)
  local script = util.tmpname() .. ".lua"
  local f = assert(io.open(script, "w"))
  f:write(("package.path = %q\npackage.cpath = %q\n"):format(
    package.path, package.cpath))
  f:write(source)
  f:close()
  -- os.execute, not io.popen: see capture() in helpers/gate.lua.
  local outfile = util.tmpname()
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "='" .. v .. "' " end
  local ok = os.execute(prefix .. "lua5.4 " .. script .. " > " .. outfile .. " 2>&1")
  local f = assert(io.open(outfile, "rb"))
  local out = f:read("a")
  f:close()
  os.remove(script)
  os.remove(outfile)
  return out, ok
end

function util.online_cpus()
  local outfile = util.tmpname()
  assert(os.execute("getconf _NPROCESSORS_ONLN > " .. outfile))
  local f = assert(io.open(outfile))
  local n = tonumber(f:read("l"))
  f:close()
  os.remove(outfile)
  return n
end

return util
