-- helpers/values.lua -- random Lua values for the copying property, a deep
-- comparison that also checks sharing, a shrinker and a printer.
--
--   local V = require "helpers.values"
--   local value, info = V.generate(seed, opts)
--   local same, why = V.same(original, copy, opts)
--   local small = V.shrink(value, still_fails)
--   print(V.show(small))
--
-- The generator is a plain function of its seed: it draws from its own
-- xorshift generator (never math.random), and never depends on the order
-- pairs() visits keys in.  So a worker that runs V.generate(seed) builds
-- the same value as the caller, which lets a spec check the results
-- direction on its own (the worker builds, only the result crosses).
--
-- What it draws: nil holes in arrays; integer keys anywhere from
-- math.mininteger to math.maxinteger; floats with integral values as keys
-- (1.0 is key 1), -0.0, inf, -inf, NaN as values; strings with every byte
-- value, embedded zeros, and lengths across each size class of the wire
-- format (1, 2, 3 and 4 byte sizes, up to a few MiB); booleans as keys;
-- tables built in ways that put integer keys in the array part, the hash
-- part, or move them between the two (out-of-order fills, deletions,
-- rehashes, key 1 set last); shared tables and cycles; tables as keys;
-- functions with upvalues, shared upvalue cells and _ENV; standard-library
-- C functions and module tables; tables with registered metatables
-- (opts.types) and with unregistered ones (dropped by the copy); futures
-- as values nested in tables (opts.futures: a function that makes a
-- finished future from a value; the copy holds the value).
--
-- Nesting goes up to opts.max_depth (default 6) except for the chains a
-- few values carry, which go up to the wire's depth limit.
local V = {}

local MAXDEPTH_WIRE = 1000

-- === a seeded generator (xorshift64*) ======================================

local function rng(seed)
  local s = seed ~ 0x2545F4914F6CDD1D
  if s == 0 then s = 1 end
  local r = {}
  function r.next()
    s = s ~ (s >> 12)
    s = s ~ (s << 25)
    s = s ~ (s >> 27)
    return (s * 0x2545F4914F6CDD1D) >> 1   -- 63 bits, never negative
  end
  function r.int(lo, hi) return lo + r.next() % (hi - lo + 1) end
  function r.chance(p) return r.next() % 1000000 < p * 1000000 end
  function r.pick(list) return list[r.int(1, #list)] end
  function r.any64() return r.next() ~ (r.next() << 33) end
  return r
end
V.rng = rng

-- === scalars ===============================================================

local SPECIAL_INTS = { 0, 1, -1, 2, 127, 128, 255, 256, 65535, 65536,
  2 ^ 31 // 1, -(2 ^ 31 // 1), 2 ^ 32 // 1, 2 ^ 53 // 1, math.maxinteger,
  math.mininteger, math.maxinteger - 1, math.mininteger + 1 }
local SPECIAL_FLOATS = { 0.0, -0.0, 1.0, -1.0, 0.5, 1 / 0, -1 / 0, 2 ^ 53, 2 ^ 63,
  -2 ^ 63, 1e308, 5e-324, 2.2250738585072014e-308, 3.14159 }

local function random_int(r)
  local c = r.int(1, 4)
  if c == 1 then return r.pick(SPECIAL_INTS) end
  if c == 2 then return r.int(-1000, 1000) end
  return r.any64()
end

local function random_float(r)
  local c = r.int(1, 5)
  if c == 1 then return r.pick(SPECIAL_FLOATS) end
  if c == 2 then return 0 / 0 end
  if c == 3 then return r.int(-1000, 1000) + 0.0 end    -- integral float
  local f = string.unpack("<d", string.pack("<i8", r.any64()))
  return f
end

-- Lengths across the size classes of the format: 1-byte sizes (< 128),
-- 2 bytes (< 16 KiB), 3 bytes (< 2 MiB), 4 bytes (a few MiB, with `big`).
local function random_length(r, big)
  local c = r.int(1, 1000)
  if c <= 800 then return r.int(0, 24) end
  if c <= 985 then return r.int(100, 140) end
  if c <= 997 or not big then return r.int(16000, 17000) end
  if c <= 999 then return r.int(2 ^ 21 - 8, 2 ^ 21 + 8) end
  return r.int(3 * 2 ^ 20, 4 * 2 ^ 20)
end

-- Random bytes, every value 0-255 equally likely, 8 at a time.
local function random_bytes(r, n)
  local parts = {}
  for i = 1, (n + 7) // 8 do parts[i] = string.pack("<i8", r.any64()) end
  return table.concat(parts):sub(1, n)
end

local function random_string(r, big)
  local n = random_length(r, big)
  if n <= 256 then return random_bytes(r, n) end
  -- Long strings: a random 256-byte pattern repeated, then a random tail,
  -- so they are cheap to make yet not all one byte.
  local unit = random_bytes(r, 256)
  return unit:rep(n // 256) .. random_bytes(r, n % 256)
end

local function random_scalar(r, o)
  local c = r.int(1, 10)
  if c == 1 then return nil end
  if c == 2 then return r.chance(0.5) end
  if c <= 5 then return random_int(r) end
  if c <= 7 then return random_float(r) end
  return random_string(r, o.big)
end

local function random_key(r, o, pool)
  local c = r.int(1, 12)
  if c <= 3 then return random_int(r) end
  if c == 4 then return r.int(1, 40) + 0.0 end         -- integral float: key n
  if c == 5 then
    local f = random_float(r)
    if f ~= f then f = 1.5 end                          -- NaN is no key
    return f
  end
  if c == 6 then return r.chance(0.5) end
  if c == 7 and o.table_keys and #pool > 0 then return r.pick(pool) end  -- a table as a key
  local s = random_string(r, false)
  return s
end

-- === functions ==============================================================

-- Each template is a real closure; V.same compares functions by what they
-- return, and cells (a getter and setter sharing one upvalue) by whether a
-- set through one is seen through the other.
local function make_function(r, o, depth, pool)
  local c = r.int(1, 4)
  if c == 1 then
    local a, b = V._value(r, o, depth + 1, pool), V._value(r, o, depth + 1, pool)
    return function() return a, b end
  elseif c == 2 then
    return function() return type(tostring), type(string.format) end   -- _ENV
  elseif c == 3 then
    local x = V._value(r, o, depth + 1, pool)
    local cell = { kind = "cell" }
    cell.get = function() return x end
    cell.set = function(v) if v ~= nil then x = v end end
    return cell
  else
    return r.pick({ print, string.format, math.floor, table.concat, os.time })
  end
end

-- === tables =================================================================

-- Builds a table from a list of {key, value} in one of several ways that
-- leave integer keys in different parts of the table.
local function build(r, entries, n_array)
  local how = r.int(1, 6)
  local t
  if how == 1 then            -- the array as a constructor would, then the rest
    t = {}
    for i = 1, n_array do t[i] = entries[i][2] end
    for i = n_array + 1, #entries do t[entries[i][1]] = entries[i][2] end
  elseif how == 2 then        -- everything in reverse order: key 1 last
    t = {}
    for i = #entries, 1, -1 do t[entries[i][1]] = entries[i][2] end
  elseif how == 3 then        -- hash keys first, then the array
    t = {}
    for i = n_array + 1, #entries do t[entries[i][1]] = entries[i][2] end
    for i = 1, n_array do t[i] = entries[i][2] end
  elseif how == 4 then        -- filled, some keys dropped, a rehash, re-added
    t = {}
    for i = 1, #entries do t[entries[i][1]] = entries[i][2] end
    local gone = {}
    for i = 1, #entries do
      if r.chance(0.3) then t[entries[i][1]] = nil; gone[#gone + 1] = i end
    end
    local filler = {}
    for j = 1, 40 do filler[j] = {}; t[filler[j]] = j end   -- grows the hash part
    for i = #gone, 1, -1 do t[entries[gone[i]][1]] = entries[gone[i]][2] end
    for j = 1, 40 do t[filler[j]] = nil end
  elseif how == 5 then        -- an array part bigger than the entries need
    t = table.pack(table.unpack({}, 1, n_array + 4))   -- n_array + 4 nils
    t.n = nil
    for i = 1, #entries do t[entries[i][1]] = entries[i][2] end
  else                        -- random order
    local order = {}
    for i = 1, #entries do order[i] = i end
    for i = #order, 2, -1 do local j = r.int(1, i); order[i], order[j] = order[j], order[i] end
    t = {}
    for _, i in ipairs(order) do t[entries[i][1]] = entries[i][2] end
  end
  return t
end

local function make_table(r, o, depth, pool)
  local n_array = r.chance(0.7) and r.int(0, r.chance(0.02) and 3000 or 12) or 0
  local n_hash = r.int(0, r.chance(0.02) and 200 or 8)
  local entries = {}
  for i = 1, n_array do
    local v = r.chance(0.15) and nil or V._value(r, o, depth + 1, pool)
    if i == n_array and v == nil then v = i end         -- keep the border
    entries[#entries + 1] = { i, v }
  end
  local used = {}
  for i = 1, n_array do used[i] = true end
  for _ = 1, n_hash do
    local k = random_key(r, o, pool)
    if k ~= nil and not used[k] and not (math.type(k) == "float" and used[math.tointeger(k) or k]) then
      used[k] = true
      if math.type(k) == "float" and math.tointeger(k) then used[math.tointeger(k)] = true end
      local v = V._value(r, o, depth + 1, pool)
      if v == nil then v = false end
      entries[#entries + 1] = { k, v }
    end
  end
  local t = build(r, entries, n_array)
  if o.types and r.chance(0.1) then
    setmetatable(t, r.pick(o.types))
  elseif r.chance(0.05) then
    setmetatable(t, { __index = function() return "unregistered" end })
  end
  if r.chance(0.2) then pool[#pool + 1] = t end
  return t
end

-- A value at `depth` (the top is 0).
function V._value(r, o, depth, pool)
  local c = r.int(1, 20)
  o.nodes = o.nodes + 1
  if depth >= o.max_depth or c <= 9 or o.nodes > o.max_nodes then return random_scalar(r, o) end
  if c <= 14 then return make_table(r, o, depth, pool) end
  if c == 15 and #pool > 0 then return r.pick(pool) end            -- shared
  if c == 16 and o.functions then return make_function(r, o, depth, pool) end
  if c == 17 then return r.pick({ string, math, table }) end       -- modules
  if c == 18 and o.futures then        -- (a future of nil would drop its key)
    local v = random_scalar(r, o)
    if v == nil then v = false end
    return o.futures(v)
  end
  return make_table(r, o, depth, pool)
end

-- A chain of tables `n` deep, the innermost holding `leaf`.
function V.chain(n, leaf)
  local top = {}
  local t = top
  for _ = 2, n do t.next = {}; t = t.next end
  t.leaf = leaf
  return top
end

-- Metatables the specs register under these names (V.register_types() in
-- every state that copies them: the program and each worker's init).
V.TYPES = {
  Point = { __name = "Point", __index = { norm = function(p) return (p.x or 0) + (p.y or 0) end } },
  Box = { __name = "Box" },
}

function V.register_types()
  local weft = require "weft"
  for name, mt in pairs(V.TYPES) do weft.register(name, mt) end
  return true
end

function V.registered(mt)
  for _, m in pairs(V.TYPES) do if rawequal(m, mt) then return true end end
  return false
end

function V.type_list()
  return { V.TYPES.Point, V.TYPES.Box }
end

--- V.generate(seed [, opts]) -> value, info.  opts: max_depth (6),
--- max_nodes (400: past it, only scalars are drawn), big
--- (allow strings of several MiB), functions (true), futures (a function
--- value -> finished future), types (a list of registered metatables).
--- info.depth is set when the value is a chain near the depth limit: then
--- the copy must fail exactly when info.depth > 1000.
function V.generate(seed, opts)
  local o = { max_depth = 6, big = false, functions = true, max_nodes = 400 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = rng(seed)
  local pool = {}
  o.nodes = 0
  if r.chance(0.02) then
    local n = r.int(MAXDEPTH_WIRE - 3, MAXDEPTH_WIRE + 3)
    return V.chain(n, r.int(1, 9)), { depth = n }
  end
  -- A third of the values are wrapped in a root that also lists every
  -- table that may be shared or used as a key (so each key table is
  -- reached as a value too, which V.same needs to pair it with its copy).
  o.table_keys = r.chance(0.3)
  local value = V._value(r, o, 0, pool)
  if o.table_keys then               -- cycles and tables as keys
    local root = { value = value, pool = pool }
    root.self = root
    if #pool > 0 then root[r.pick(pool)] = "a table as a key" end
    value = root
  end
  return value, {}
end

-- === comparison =============================================================

local function is_nan(x) return x ~= x end

local function show_key(k)
  if type(k) == "string" then return string.format("%q", #k > 40 and k:sub(1, 40) .. "..." or k) end
  return tostring(k)
end

--- V.same(a, b [, opts]) -> true, or false and where they differ.  `b` is
--- the copy of `a`.  opts.future_value(f) gives the value a future stands
--- for; opts.registered(mt) says whether mt crosses (else the copy has no
--- metatable).  Sharing is checked: each table or function of `a` maps to
--- one of `b` and no two to the same one.
function V.same(a, b, opts)
  opts = opts or {}
  local fwd, back = {}, {}
  local cells, deferred = {}, {}
  local function eq(x, y, path)
    if type(x) == "userdata" and opts.future_value then
      return eq(opts.future_value(x), y, path)
    end
    if type(x) ~= type(y) then
      return false, path .. ": " .. type(x) .. " became " .. type(y)
    end
    local tx = type(x)
    if tx == "number" then
      if math.type(x) ~= math.type(y) then return false, path .. ": " .. math.type(x) .. " became " .. math.type(y) end
      if is_nan(x) then return is_nan(y) or false, path .. ": NaN changed" end
      if x ~= y or (x == 0 and 1 / x ~= 1 / y) then
        return false, path .. ": " .. string.format("%.17g became %.17g", x, y)
      end
      return true
    elseif tx == "table" or tx == "function" then
      if tx == "table" and (x == string or x == math or x == table) then
        return rawequal(x, y) or false, path .. ": module table changed"
      end
      if tx == "function" then
        local ok = pcall(string.dump, x)
        if not ok then return rawequal(x, y) or false, path .. ": C function changed" end
      end
      if fwd[x] ~= nil then
        return rawequal(fwd[x], y) or false, path .. ": sharing lost (a table seen twice became two)"
      end
      if back[y] ~= nil then
        return false, path .. ": two tables became one"
      end
      fwd[x], back[y] = y, x
      if tx == "function" then
        local rx, ry = table.pack(x()), table.pack(y())
        if rx.n ~= ry.n then return false, path .. "(): result count changed" end
        for i = 1, rx.n do
          local ok, why = eq(rx[i], ry[i], path .. "()[" .. i .. "]")
          if not ok then return false, why end
        end
        return true
      end
      local mx = getmetatable(x)
      local my = getmetatable(y)
      local want = mx ~= nil and opts.registered and opts.registered(mx) and mx or nil
      if not rawequal(my, want) then return false, path .. ": metatable " .. tostring(mx) .. " became " .. tostring(my) end
      if rawget(x, "kind") == "cell" and type(rawget(x, "get")) == "function" then
        cells[#cells + 1] = { x, y, path }
      end
      local n = 0
      for k, v in next, x do
        n = n + 1
        if type(k) == "table" or type(k) == "function" then
          -- compared once every table reachable as a value is paired
          deferred[#deferred + 1] = { x, y, k, v, path }
        elseif type(k) == "userdata" then
          return false, path .. ": a future as a key"
        else
          local vy = rawget(y, k)
          if vy == nil then return false, path .. "[" .. show_key(k) .. "]: key lost" end
          local ok, why = eq(v, vy, path .. "[" .. show_key(k) .. "]")
          if not ok then return false, why end
        end
      end
      local m = 0
      for _ in next, y do m = m + 1 end
      if m ~= n then return false, path .. string.format(": %d keys became %d", n, m) end
      return true
    else
      return rawequal(x, y) or false, path .. ": " .. tostring(x) .. " became " .. tostring(y)
    end
  end
  -- Tables used as keys must be reached as values first: compare the
  -- pools (when the value has one) before the rest.
  if type(a) == "table" and type(rawget(a, "pool")) == "table" and type(b) == "table" then
    local ok, why = eq(a.pool, rawget(b, "pool"), ".pool")
    if not ok then return false, why end
  end
  local ok, why = eq(a, b, "")
  if not ok then return false, why end
  -- Entries keyed by tables: by now each key table has met its copy
  -- (comparing their values may pair more, hence the loop).
  local i = 1
  while i <= #deferred do
    local x, y, k, v, path = table.unpack(deferred[i])
    local ky = fwd[k]
    if ky == nil then return false, path .. "[" .. tostring(k) .. "]: a key table with no copy" end
    local vy = rawget(y, ky)
    if vy == nil then return false, path .. "[" .. tostring(k) .. "]: key lost" end
    ok, why = eq(v, vy, path .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
    i = i + 1
  end
  -- Cells: a set through the copy's setter is seen by its getter (one
  -- shared upvalue), and not by the original's.
  for i, c in ipairs(cells) do
    local x, y, path = c[1], c[2], c[3]
    local token = { i }
    y.set(token)
    if not rawequal(y.get(), token) then return false, path .. ": shared upvalue split in two" end
    if rawequal(x.get(), token) then return false, path .. ": copy shares a cell with the original" end
  end
  return true
end

-- === shrinking ==============================================================

-- Smaller values to try in place of v.
local function candidates(v)
  local out = {}
  if type(v) == "string" and #v > 0 then
    out[#out + 1] = v:sub(1, #v // 2)
    out[#out + 1] = v:sub(#v // 2 + 1)
  elseif type(v) == "table" and getmetatable(v) == nil and v ~= string and v ~= math and v ~= table then
    local keys = {}
    for k in next, v do keys[#keys + 1] = k end
    for _, k in ipairs(keys) do                        -- a child alone
      if type(v[k]) == "table" then out[#out + 1] = v[k] end
    end
    if #keys > 1 then                                  -- half the keys
      local half = {}
      for i = 1, #keys // 2 do half[keys[i]] = v[keys[i]] end
      out[#out + 1] = half
      local rest = {}
      for i = #keys // 2 + 1, #keys do rest[keys[i]] = v[keys[i]] end
      out[#out + 1] = rest
    end
    for _, k in ipairs(keys) do                        -- one key fewer
      local t = {}
      for k2, x in next, v do if k2 ~= k then t[k2] = x end end
      out[#out + 1] = t
    end
  end
  return out
end

--- V.shrink(v, fails [, budget]) -> the smallest value found for which
--- fails(value) is still true (greedy, at most `budget` tries).
function V.shrink(v, fails, budget)
  budget = budget or 300
  local improved = true
  while improved and budget > 0 do
    improved = false
    for _, c in ipairs(candidates(v)) do
      budget = budget - 1
      if budget <= 0 then break end
      local ok, failing = pcall(fails, c)
      if ok and failing then v, improved = c, true; break end
    end
  end
  return v
end

-- === printing ===============================================================

--- V.show(v) -> readable Lua-like text (cycles and shared tables as <ref n>,
--- long strings cut).
function V.show(v, limit)
  limit = limit or 4000
  local seen, n, out = {}, 0, {}
  local function emit(s) out[#out + 1] = s end
  local function walk(x, depth)
    local t = type(x)
    if t == "string" then
      emit(#x > 60 and string.format("%q..(%d bytes)", x:sub(1, 60), #x) or string.format("%q", x))
    elseif t == "number" then
      emit(math.type(x) == "integer" and tostring(x) or string.format("%.17g", x))
    elseif t ~= "table" then
      emit(tostring(x))
    elseif seen[x] then
      emit("<ref " .. seen[x] .. ">")
    elseif depth > 12 then
      emit("{...}")
    else
      n = n + 1
      seen[x] = n
      emit("<" .. n .. ">{")
      for k, val in next, x do
        emit("[")
        walk(k, depth + 1)
        emit("]=")
        walk(val, depth + 1)
        emit(", ")
      end
      emit("}")
      if getmetatable(x) then emit("+mt") end
    end
  end
  walk(v, 0)
  local s = table.concat(out)
  return #s > limit and s:sub(1, limit) .. "..." or s
end

return V
