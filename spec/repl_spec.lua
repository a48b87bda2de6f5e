-- The weft REPL, driven through a pseudo-terminal (helpers/terminal.py):
-- what a person types, what the terminal shows.  Each spec is one session:
-- a list of steps (send keys, expect text, run a shell command, wait for
-- the exit), played by the driver, which reports the first step that did
-- not happen and the whole transcript.
--
-- Nothing here sleeps.  Every "expect" waits for output (60 s at most, a
-- bound only a broken REPL reaches); a task that must finish while the
-- prompt is idle blocks on a FIFO until a "shell" step opens it.
local cjson = require "cjson"
local util = require "helpers.util"

local sh_quote, slurp = util.quote, util.read

local build = assert(os.getenv("WEFT_BUILD_DIR"), "WEFT_BUILD_DIR is not set (run through scripts/test)")
local WEFT = build .. "/weft/weft"
local DRIVER = "spec/helpers/terminal.py"   -- scripts/test runs from the top of the tree

local CTRL_C, CTRL_D = "\3", "\4"

-- Plays the steps at a fresh `weft` on a terminal.  Returns the driver's
-- result: ok, step, why, status, transcript.
local function session(steps, env, args)
  local stepfile, out = util.tmpname(), util.tmpname()
  local f = assert(io.open(stepfile, "w"))
  f:write(cjson.encode(steps))
  f:close()
  local prefix = "WEFT_HISTORY= TERM=xterm"
  for k, v in pairs(env or {}) do prefix = prefix .. " " .. k .. "=" .. sh_quote(v) end
  local words = {}
  for i, a in ipairs(args or {}) do words[i] = sh_quote(a) end
  assert(os.execute(("%s python3 %s %s -- %s %s > %s"):format(prefix, DRIVER, stepfile, WEFT,
                                                              table.concat(words, " "), out)))
  return cjson.decode(slurp(out))
end

-- Asserts the session played every step.
local function played(result)
  assert(result.ok, ("step %s: %s\n--- transcript ---\n%s"):format(
    tostring(result.step), tostring(result.why), result.transcript))
  return result
end

local function send(text) return { send = text } end
local function expect(text) return { expect = text } end
local function line(text) return { send = text .. "\r" } end
local PROMPT = expect("> ")

-- A FIFO for a task to block on until a "shell" step opens it.
local function fifo()
  local path = util.tmpname()
  assert(os.execute("mkfifo " .. sh_quote(path)))
  return path
end
local function release(path)
  return { shell = ("timeout 60 sh -c 'echo go > %s'"):format(path) }
end

-- Waits until the REPL's main thread sleeps.  After the echo of a line
-- whose only blocking call is a wait on futures, that is the wait itself
-- (Ctrl-C sooner would interrupt the line before it reaches the wait).
local IN_WAIT = { shell = "timeout 60 sh -c 'until grep -q \"^[0-9]* ([^)]*) S\" "
                          .. "/proc/$TERMINAL_PID/stat; do sleep 0.01; done'" }

describe("the weft REPL", function()
  after_each(util.cleanup)

  it("prints the values of an expression, tab-separated, and nothing for a statement", function()
    local r = played(session {
      expect("weft " .. require("weft").version), PROMPT,
      line "x = 20", PROMPT,
      line "x + 22", expect("42\r\n"), PROMPT,
      line "'a', nil, x", expect("a\tnil\t20\r\n"), PROMPT,
      line "=x * 2", expect("40\r\n"), PROMPT,
      line "type(weft.threads)", expect("function\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
    assert.equal(0, r.status)
    assert.truthy(r.transcript:find("x = 20\r\n\r?> "), r.transcript)   -- the statement printed nothing
  end)

  it("continues an incomplete chunk on the next lines", function()
    played(session {
      PROMPT,
      line "for i = 1, 3 do", expect(">> "),
      line "  io.write(i, ' ')", expect(">> "),
      line "end print()", expect("1 2 3 \r\n"), PROMPT,
      line "local t = {", expect(">> "),
      line "}  print(#t)", expect("0\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("prints an error with its traceback and goes on", function()
    played(session {
      PROMPT,
      line "error('oops')", expect("stdin:1: oops\r\nstack traceback:"), PROMPT,
      line "local x = = 1", expect("stdin:1: unexpected symbol near '='"), PROMPT,
      line "1 + 1", expect("2\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("runs a line that submits to a process pool, with a function defined at the prompt", function()
    played(session {
      PROMPT,
      line "ex = weft.processes { workers = 1 }", PROMPT,
      line "function square(x) return x * x end", PROMPT,
      line "ex:submit(square, 7):result()", expect("49\r\n"), PROMPT,
      line "pid = function() return io.open('/proc/self/stat'):read('n') end", PROMPT,
      line "ex:submit(pid):result() ~= pid()", expect("true\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("Ctrl-C interrupts a running `while true do end` and the REPL keeps working", function()
    local r = played(session {
      PROMPT,
      -- The line announces itself (the output differs from its echo), so
      -- Ctrl-C is sent while it runs, not while it is still being typed.
      line "print('spin' .. 'ning') while true do end", expect("spinning\r\n"),
      send(CTRL_C), expect("interrupted"), PROMPT,
      line "6 * 7", expect("42\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
    assert.equal(0, r.status)
  end)

  it("Ctrl-C interrupts a wait on a process-pool future and cancels it", function()
    played(session {
      PROMPT,
      line "ex = weft.processes { workers = 1 }", PROMPT,
      line "f = ex:submit(function() while true do end end)", PROMPT,
      line "f:result()", expect("f:result()\r\n"), IN_WAIT,
      send(CTRL_C), expect("interrupted"), PROMPT,
      line "f:state()", expect("cancelled\r\n"), PROMPT,
      line "ex:submit(function() return 'still' .. ' serving' end):result()",
      expect("still serving\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("Ctrl-C at the prompt drops the line; a second one at an empty prompt exits", function()
    local r = played(session {
      PROMPT,
      send "print('should' .. ' not run')", expect("' not run')"),
      send(CTRL_C), expect("(Ctrl-C again or Ctrl-D to exit)"), PROMPT,
      send(CTRL_C), { exit = true },
    })
    assert.equal(0, r.status)
    assert.is_nil(r.transcript:find("should not run", 1, true), r.transcript)
  end)

  it("a line run after a Ctrl-C disarms it: the next Ctrl-C only warns", function()
    played(session {
      PROMPT,
      send(CTRL_C), expect("(Ctrl-C again or Ctrl-D to exit)"), PROMPT,
      line "1", expect("1\r\n"), PROMPT,
      send(CTRL_C), expect("(Ctrl-C again or Ctrl-D to exit)"), PROMPT,
      line "'alive'", expect("alive\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("runs done-callbacks and prints task log records while the prompt is idle", function()
    local done, logged = fifo(), fifo()
    played(session {
      PROMPT,
      line "ex = weft.threads { workers = 1 }", PROMPT,
      line(("P, Q = %q, %q"):format(done, logged)), PROMPT,
      line "f = ex:submit(function(p) io.open(p):read('a') return 5 end, P)", PROMPT,
      line "f:add_done_callback(function(f) print('call' .. 'back', f:result()) end)", PROMPT,
      release(done), expect("callback\t5\r\n"), PROMPT,
      line "ex:submit(function(q) io.open(q):read('a') require('weft').log.warn('hi') end, Q)", PROMPT,
      release(logged), expect("WARN  [on thread 1] hi\r\n"), PROMPT,
      line "'prompt works'", expect("prompt works\r\n"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("Tab completes globals, fields and methods", function()
    played(session {
      PROMPT,
      send "weft.thr\t", expect("weft.threads"), line "{ workers = 1 }", PROMPT,
      send "ex = weft.in\t", expect("weft.inline"), line "()", PROMPT,
      send "f = ex:sub\t", expect("ex:submit"), line "(function() return 3 end)", PROMPT,
      send "f:res\t", expect("f:result"), line "()", expect("3\r\n"), PROMPT,
      send "weft.t\t\t", expect("weft.task"), expect("weft.threads"), expect("weft.timeout"),
      send(CTRL_C), expect("(Ctrl-C again or Ctrl-D to exit)"), PROMPT,
      send(CTRL_D), { exit = true },
    })
  end)

  it("keeps the history in WEFT_HISTORY", function()
    local history = util.tmpname()
    played(session({
      PROMPT,
      line "a = 1", PROMPT,
      line "for i = 1, 2 do", expect(">> "), line "end", PROMPT,
      send(CTRL_D), { exit = true },
    }, { WEFT_HISTORY = history }))
    assert.equal("a = 1\nfor i = 1, 2 do\nend\n", slurp(history))
  end)
end)

describe("weft run on a terminal", function()
  after_each(util.cleanup)

  it("keeps one live progress line while tasks run, then prints the flow's summary", function()
    local gates = { fifo(), fifo() }   -- one each: a FIFO read by two tasks could leave one blocked
    local script = util.tmpname() .. ".lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
      local weft = require "weft"
      local wait = weft.task { function(path)
        local f = io.open(path) f:read("l") f:close()   -- blocks until the spec writes
        return true
      end, name = "wait" }
      local flow = weft.flow { function() return wait:map { %q, %q } end, name = "gated" }
      flow:run()
    ]]):format(gates[1], gates[2]))
    f:close()
    local r = played(session({
      expect("[gated] 0/2 done | 2 running | 0 failed"),
      { shell = ("timeout 60 sh -c 'echo go > %s; echo go > %s'"):format(gates[1], gates[2]) },
      expect("flow gated: completed"), expect("wait"),
      { exit = true },
    }, { WEFT_EXECUTOR = "threads:2" }, { "run", script }))
    assert.equal(0, r.status)
    os.remove(script)
  end)
end)
