-- spec/stress/stresslib.lua -- what the soaks share (soak.lua, chaos.lua,
-- fleet_chaos.lua): their options, the machine's view of this process (its
-- threads and children, from /proc), killing a process, and the checks
-- that end in "N passed, N failed".
--
--   local S = dofile(dir .. "/stresslib.lua")
--   local opts = S.options(defaults, "soak.lua")      -- --name N for each key
--   S.read_file(path), S.list_dir(path), S.mypid
--   S.threads_now() -> count, { "tid:comm", ... }
--   S.children_now() -> { "pid:comm", ... }
--   S.kill_pid(pid) -> true if signalled; S.is_worker(ex, pid)
--   local check, summary = S.checks()   -- check(ok, fmt, ...); summary() -> failed
local S = {}

--- Reads --name N pairs from arg into a copy of `defaults` (integers only);
--- a bad word prints the usage, built from the defaults, and exits 2.
function S.options(defaults, script)
  local opts, names = {}, {}
  for k, v in pairs(defaults) do opts[k] = v; names[#names + 1] = k end
  table.sort(names)
  local i = 1
  while i <= #arg do
    local k = arg[i]:match("^%-%-(%w+)$")
    if not k or opts[k] == nil or not tonumber(arg[i + 1]) then
      local words = {}
      for _, name in ipairs(names) do words[#words + 1] = ("[--%s N]"):format(name) end
      io.stderr:write(("usage: %s %s\n"):format(script, table.concat(words, " ")))
      os.exit(2)
    end
    opts[k] = math.tointeger(tonumber(arg[i + 1])) or error("--" .. k .. " wants an integer")
    i = i + 2
  end
  return opts
end

function S.read_file(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function S.list_dir(path)
  local out = {}
  local p = io.popen("ls " .. path .. " 2>/dev/null")
  for name in p:lines() do out[#out + 1] = name end
  p:close()
  return out
end

-- (Read here, not by `ls`, a child: /proc/self would be its own.)
S.mypid = tonumber((S.read_file("/proc/self/stat") or ""):match("^(%d+)"))

--- This process's threads, as "tid:comm".
function S.threads_now()
  local names = {}
  for _, tid in ipairs(S.list_dir("/proc/" .. S.mypid .. "/task")) do
    local comm = (S.read_file("/proc/" .. S.mypid .. "/task/" .. tid .. "/comm") or "?"):gsub("%s+$", "")
    names[#names + 1] = tid .. ":" .. comm
  end
  return #names, names
end

--- The children of this process (any thread's), zombies included, as
--- "pid:comm".  The `ls` and `sh` that list them are left out.
function S.children_now()
  local kids = {}
  for _, tid in ipairs(S.list_dir("/proc/" .. S.mypid .. "/task")) do
    for pid in (S.read_file("/proc/" .. S.mypid .. "/task/" .. tid .. "/children") or ""):gmatch("%d+") do
      local comm = (S.read_file("/proc/" .. pid .. "/comm") or ""):gsub("%s+$", "")
      if comm ~= "ls" and comm ~= "sh" and comm ~= "" then kids[#kids + 1] = pid .. ":" .. comm end
    end
  end
  return kids
end

--- Is pid one of the process pool ex's live workers (ex:stats().pids)?
function S.is_worker(ex, pid)
  for _, p in ipairs(ex:stats().pids or {}) do
    if p == pid then return true end
  end
  return false
end

do
  local ok, uv = pcall(require, "luv")
  if ok then
    S.kill_pid = function(pid) return uv.kill(pid, "sigkill") == 0 end
  else
    S.kill_pid = function(pid) return os.execute("kill -KILL " .. pid .. " 2>/dev/null") == true end
  end
end

--- check(ok, fmt, ...) prints "ok    ..." or "FAIL  ..." and counts it;
--- summary() prints "N passed, N failed" and returns the failures.
function S.checks()
  local passed, failed = 0, 0
  local function check(ok, fmt, ...)
    local msg = fmt:format(...)
    if ok then
      passed = passed + 1
      print("ok    " .. msg)
    else
      failed = failed + 1
      print("FAIL  " .. msg)
    end
  end
  local function summary()
    print(("%d passed, %d failed"):format(passed, failed))
    return failed
  end
  return check, summary
end

return S
