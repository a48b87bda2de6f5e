--[[ cpu.lua: a CPU-bound job in parallel -- the Mandelbrot set, one task
per row, on a pool of worker processes -- and its speed-up over a serial run.

    build/weft/weft run scripts/examples/cpu.lua            (in the source tree)
    weft run cpu.lua                                        (after make install)
    weft run cpu.lua threads                                (on a thread pool)

ex:map sends the rows to the workers in chunks and yields the results in
row order. Each worker is a separate Lua state (a process here, an OS thread
with `threads`), so pure Lua code runs on every core at once. The counts are
the same every run; the timings and the speed-up depend on the machine.
]]
local weft = require "weft"

local WIDTH, HEIGHT, MAX_ITER = 960, 600, 200

-- Points of one row that stay bounded after MAX_ITER iterations. Its
-- upvalues (the sizes) travel with it to the workers.
local function row(y)
  local inside = 0
  local ci = -1.25 + 2.5 * y / (HEIGHT - 1)
  for x = 0, WIDTH - 1 do
    local cr = -2.25 + 3.0 * x / (WIDTH - 1)
    local zr, zi, n = 0.0, 0.0, 0
    while n < MAX_ITER and zr * zr + zi * zi <= 4.0 do
      zr, zi = zr * zr - zi * zi + cr, 2 * zr * zi + ci
      n = n + 1
    end
    if n == MAX_ITER then inside = inside + 1 end
  end
  return inside
end

local rows = {}
for y = 0, HEIGHT - 1 do rows[#rows + 1] = y end

local now = weft.core.now   -- a monotonic clock, in seconds

-- Serial: every row in this process, one after the other.
local t0 = now()
local serial = 0
for _, y in ipairs(rows) do serial = serial + row(y) end
local serial_time = now() - t0

-- Parallel: the same rows on one worker per CPU.
local kind = arg[1] or "processes"
local ex <close> = weft.executor(kind)
local workers = ex:stats().workers
t0 = now()
local parallel = 0
for _, inside in ex:map(row, rows, { chunksize = 8 }) do
  parallel = parallel + inside
end
local parallel_time = now() - t0

assert(parallel == serial, "the parallel count differs from the serial one")
print(string.format("mandelbrot %dx%d, %d iterations: %d points inside the set",
                    WIDTH, HEIGHT, MAX_ITER, parallel))
print(string.format("serial:   %.2f s", serial_time))
print(string.format("parallel: %.2f s on %d %s (speed-up %.1fx)", parallel_time, workers,
                    kind, serial_time / parallel_time))
