-- weft.luv: weft's futures in a libuv event loop (luv).
--
--   local uv = require "luv"
--   local weft = require "weft"
--   weft.luv.attach()                 -- done-callbacks now run from uv.run()
--   coroutine.wrap(function()
--     local v = weft.luv.await(pool:submit(work, x))   -- the loop keeps going
--   end)()
--   uv.run()
--
-- The runtime gives each Lua state a completion source: a file descriptor
-- that becomes readable when futures created by that state have
-- done-callbacks ready to run (core.completion_fd), and a call that runs
-- them (core.dispatch).  attach() watches that descriptor with a uv poll
-- handle, so nothing busy-waits: the loop sleeps in the kernel until a
-- task completes.  The handle keeps the loop alive only while some future
-- has a done-callback still to run (await is one), so uv.run() returns
-- once the loop has nothing else to do.  Callbacks also run outside the
-- poll handle's own callback (a set_result in a timer, a result() call):
-- unref'd prepare and check handles look again on every turn of the loop.

local core = require "weft.core"

local M = {}

local uv         -- luv, once attached
local poll       -- the uv poll handle on the completion source
local watchers   -- prepare and check handles that keep its ref right
local loop_arg   -- what attach was given, for the error on a second call

local function raise(kind, fmt, ...)
  error(core.error(kind, string.format(fmt, ...)), 3)
end

-- Keeps the loop alive exactly while callbacks are still to run.
local function update_ref()
  if core.callbacks_pending() > 0 then poll:ref() else poll:unref() end
end

local add_done_callback = core.Future.add_done_callback

--- weft.luv.attach([loop]) -> the poll handle
-- `loop` is luv itself (the default loop, the only one luv exposes) or
-- nothing.  Attaching twice raises kind invalid_state.
function M.attach(loop)
  if poll then
    raise("invalid_state", "weft.luv.attach: already attached (to %s)", tostring(loop_arg))
  end
  if loop ~= nil then
    if type(loop) ~= "table" or type(loop.new_poll) ~= "function" then
      raise("config", "weft.luv.attach: expected the luv module (or nothing), got %s",
            type(loop))
    end
    uv = loop
  else
    local ok, mod = pcall(require, "luv")
    if not ok then
      raise("config", "weft.luv.attach: luv is not installed (Debian: apt install lua-luv): %s",
            tostring(mod))
    end
    uv = mod
  end
  loop_arg = loop or "the default loop"
  poll = uv.new_poll(core.completion_fd())
  poll:start("r", function()
    core.dispatch()
    update_ref()
  end)
  watchers = { uv.new_prepare(), uv.new_check() }
  for _, w in ipairs(watchers) do
    w:start(update_ref)
    w:unref()
  end
  -- A callback registered from now on keeps the loop alive until it runs.
  core.Future.add_done_callback = function(f, cb)
    add_done_callback(f, cb)
    update_ref()
  end
  update_ref()
  return poll
end

--- weft.luv.attached() -> boolean
function M.attached()
  return poll ~= nil
end

--- weft.luv.detach(): stops watching (callbacks then run on waits again).
function M.detach()
  if not poll then return end
  core.Future.add_done_callback = add_done_callback
  for _, h in ipairs { poll, watchers[1], watchers[2] } do
    h:stop()
    h:close()
  end
  poll, watchers, uv, loop_arg = nil, nil, nil, nil
end

--- weft.luv.await(f) -> f's results (raises its error)
-- Suspends the calling coroutine until f is done; the loop runs on.
function M.await(f)
  if not core.is_future(f) then
    raise("config", "weft.luv.await: expected a future, got %s", type(f))
  end
  local co, main = coroutine.running()
  if main then
    raise("invalid_state", "weft.luv.await must be called inside a coroutine "
          .. "(wrap the code in coroutine.wrap), not on the main thread")
  end
  if not f:done() then
    if not poll then
      raise("invalid_state", "weft.luv.await: call weft.luv.attach() first")
    end
    local suspended = false
    f:add_done_callback(function()   -- (at once if f finished meanwhile)
      if not suspended then return end
      local ok, err = coroutine.resume(co)
      if not ok then error(err, 0) end   -- reported by weft's callback reporter
    end)
    -- Resumed by the callback; anybody else resuming us early finds f not
    -- done and we yield again.
    suspended = true
    while not f:done() do coroutine.yield() end
    suspended = false
  end
  return f:result()
end

return M
