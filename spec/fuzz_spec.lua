-- The fuzz corpus of the wire decoder (spec/fuzz/wire/: real messages,
-- edge cases and every crash the fuzzer found) replayed through the normal
-- build's decoder, weft.core._wire_decode: each input decodes to values or
-- raises a weft.Error of kind serialization; none crashes the process.
local core = require "weft.core"

local dir = "spec/fuzz/wire"

local function inputs()
  local names = {}
  local p = assert(io.popen("ls " .. dir))
  for name in p:lines() do names[#names + 1] = name end
  p:close()
  table.sort(names)
  return names
end

local function read(name)
  local f = assert(io.open(dir .. "/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

describe("the wire fuzz corpus", function()
  local names = inputs()

  it("has seeds and regression inputs", function()
    local seeds, crashes = 0, 0
    for _, name in ipairs(names) do
      if name:match("^seed%-") then seeds = seeds + 1 end
      if name:match("^crash%-") then crashes = crashes + 1 end
    end
    assert.is_true(seeds >= 50, "seeds: " .. seeds)
    assert.is_true(crashes >= 1, "regression inputs: " .. crashes)
  end)

  for _, name in ipairs(names) do
    it("decodes " .. name .. " to values or a serialization error", function()
      local bytes = read(name)
      local res = table.pack(pcall(core._wire_decode, bytes))
      if not res[1] then
        local err = res[2]
        assert.are.equal("table", type(err), tostring(err))
        assert.are.equal("serialization", err.kind, tostring(err))
        assert.matches("bad message", err.message)
      end
      collectgarbage()
    end)
  end

  it("refuses bytecode naming more upvalues than it has (crash-upvalue-names)", function()
    local ok, err = pcall(core._wire_decode, read("crash-upvalue-names"))
    assert.is_false(ok)
    assert.are.equal("serialization", err.kind)
    assert.matches("bytecode", err.message)
  end)

  it("decodes the real messages among the seeds back to what was encoded", function()
    local v = table.pack(core._wire_decode(read("seed-scalars")))
    assert.are.equal(15, v.n)
    assert.are.equal(math.mininteger, v[7])
    assert.are.equal("abc", v[15])
    local rec = core._wire_decode(read("seed-record-task"))
    assert.are.equal("task", rec.kind)
    assert.are.equal(42, rec.value.code)
    local inc, get = core._wire_decode(read("seed-shared-upvalue"))
    inc()
    inc()
    assert.are.equal(2, get())
  end)
end)
