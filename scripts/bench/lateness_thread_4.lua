--[[ lateness_thread_4: lateness_thread.lua with 4 workers, each running a
spin with its own deadline: more busy threads than the 2 cores of the
reference machine, so a deadline often passes while its thread is not on
a core. Target as lateness_thread: p99 under 5 ms. Baseline:
lateness_thread_4.py.
]]
arg[1] = "4"
dofile((arg[0]:match("^(.*)/") or ".") .. "/lateness_thread.lua")
