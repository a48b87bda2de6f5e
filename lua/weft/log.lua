-- weft.log: weft's logger.
--
--   weft.log.info("loaded %d rows", n)     -- format and arguments
--   weft.log:info("loaded 3 rows")         -- or as a logger object
--
-- Both forms work, so weft.log can be passed wherever a logger object is
-- expected (weft.run_task_with_timeout).  It works in tasks on every
-- executor: a record made by a task (time, level, flow, task, attempt,
-- worker, message) travels to the state that submitted it, and is written
-- there when that state waits on futures (see runtime/src/log.h).
--
-- The level threshold comes from WEFT_LOG_LEVEL (debug, info, warn, error;
-- default info) and can be changed with weft.log.set_level.  Records go to
-- stderr, one line each, unless a sink takes them: weft.log.set_sink(fn)
-- calls fn(record) instead (the `weft` program uses this to keep records
-- above its progress line).

local core = require "weft.core"

local log = {}

local emit_core, format, tostring, select = core.log_emit, string.format, tostring, select

local function emit(level, first, ...)
  if first == log then return emit(level, ...) end   -- called as log:info(msg)
  local msg
  if select("#", ...) > 0 then
    local ok, text = pcall(format, tostring(first), ...)
    if not ok then
      error(core.error("config", ("weft.log.%s: the format %q does not fit its arguments: %s")
                       :format(level, tostring(first), tostring(text))), 0)
    end
    msg = text
  else
    msg = tostring(first)
  end
  emit_core(level, msg)
end

for _, level in ipairs { "debug", "info", "warn", "error" } do
  log[level] = function(...) return emit(level, ...) end
end

--- weft.log.set_level(name): the lowest level written from now on.
log.set_level = core.set_log_level

--- weft.log.level() -> the current level's name.
log.level = core.log_level

--- weft.log.set_sink(fn | nil): fn(record) receives every record instead of
--- stderr; record = {time, level, message, flow, task, attempt, worker}.
log.set_sink = core.set_log_sink

return log
