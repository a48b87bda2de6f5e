-- weft.log: weft's logger.
--
--   weft.log.info("loaded %d rows", n)     -- format and arguments
--   weft.log:info("loaded 3 rows")         -- or as a logger object
--
-- Both forms work, so weft.log can be passed wherever a logger object is
-- expected (weft.run_task_with_timeout).  Records go to stderr, from any
-- state (a worker's too), one line each: time, level, message.  The level
-- threshold comes from WEFT_LOG_LEVEL (debug, info, warn, error; default
-- info) and can be changed with weft.log.set_level.

local log = {}

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
local threshold = LEVELS[(os.getenv("WEFT_LOG_LEVEL") or ""):lower()] or LEVELS.info

--- weft.log.set_level(name): the lowest level written from now on.
function log.set_level(name)
  local n = LEVELS[name]
  if not n then
    local core = require "weft.core"
    error(core.error("config", "weft.log.set_level: unknown level " .. tostring(name)
                     .. " (debug, info, warn or error)"), 2)
  end
  threshold = n
end

local function emit(level, first, ...)
  if first == log then return emit(level, ...) end   -- called as log:info(msg)
  if LEVELS[level] < threshold then return end
  local msg = first
  if select("#", ...) > 0 then
    msg = string.format(tostring(first), ...)
  else
    msg = tostring(first)
  end
  io.stderr:write(string.format("%s %-5s %s\n", os.date("%H:%M:%S"), level:upper(), msg))
end

for level in pairs(LEVELS) do
  log[level] = function(...) return emit(level, ...) end
end

return log
