--[[ pipeline.lua: futures that feed other futures.

    LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/?.so;;" \
      lua5.4 scripts/examples/pipeline.lua

A future passed to ex:submit, as an argument or inside a table argument, is
a dependency: the task waits for it and receives its first result in its
place. Nothing here blocks the caller until as_completed and gather.

    generate(seed) --> summarize(numbers) --+
    generate(seed) --> summarize(numbers) --+--> report({summaries})
    generate(seed) --> summarize(numbers) --+
]]
local weft = require "weft"

-- Stage 1: make a data set (a stand-in for reading a file or a URL).
local function generate(seed, n)
  local numbers, x = {}, seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648 -- a small LCG, deterministic
    numbers[i] = x % 1000
  end
  return numbers
end

-- Stage 2: summarize one data set.
local function summarize(name, numbers)
  local sum, max = 0, 0
  for _, v in ipairs(numbers) do
    sum = sum + v
    if v > max then max = v end
  end
  return { name = name, count = #numbers, mean = sum / #numbers, max = max }
end

-- Stage 3: combine every summary into one line per data set.
local function report(summaries)
  local lines = {}
  for _, s in ipairs(summaries) do
    lines[#lines + 1] = string.format("%-6s n=%d mean=%.1f max=%d", s.name, s.count, s.mean, s.max)
  end
  return table.concat(lines, "\n")
end

do
  local ex <close> = weft.threads{workers = 2}

  local sources = { alpha = 1, beta = 2, gamma = 3 }
  local names = { "alpha", "beta", "gamma" }

  -- Build the whole graph up front: each summarize depends on a generate.
  local summaries = {}
  for i, name in ipairs(names) do
    local numbers = ex:submit(generate, sources[name], 200000)
    summaries[i] = ex:submit(summarize, name, numbers) -- a future as an argument
  end

  -- report depends on all three, through futures inside a table argument.
  local final = ex:submit(report, summaries)

  -- Watch the summaries finish, in whatever order they do.
  for f in weft.as_completed(summaries) do
    local s = f:result()
    print(string.format("summarized %-6s (mean %.1f)", s.name, s.mean))
  end

  -- gather swaps every future in a structure for its result.
  local all = weft.gather({ report = final, first = summaries[1] })
  print("report:\n" .. all.report)
  assert(all.first.name == "alpha")

  -- A failure upstream fails everything downstream with kind "dependency".
  local broken = ex:submit(function() error("no such data set") end)
  local downstream = ex:submit(summarize, "broken", broken)
  local ok, err = pcall(downstream.result, downstream)
  assert(not ok and weft.is(err, "dependency"))
  local cause = err.cause -- the upstream task's error; its `value` is what it raised
  print("downstream of a failed task: " .. err.kind .. " error, caused by: "
    .. tostring(weft.is(cause, "task") and cause.value or cause))
end
