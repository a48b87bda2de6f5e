-- weft: thread pools, process pools and futures for Lua 5.4, in C.
--
-- Built from a checkout with the repository's Makefile:
--
--   luarocks --lua-version 5.4 make --deps-mode=none rockspec/weft-scm-1.rockspec
--
-- --deps-mode=none because no LuaRocks registry is reachable here: the C
-- libraries and Lua modules weft needs come from Debian packages
-- (scripts/bootstrap installs them). `luarocks make` builds the working tree
-- in place, so `source` below is never fetched.
rockspec_format = "3.0"
package = "weft"
version = "scm-1"

source = {
  url = "git+file://./",
}

description = {
  summary = "Thread pools, process pools and futures for Lua 5.4",
  license = "MIT", -- placeholder: the repo has no LICENSE file yet
  detailed = [[
weft is a C runtime for Lua 5.4 that runs work in parallel: thread pools,
process pools, a distributed executor on Redis, futures with Python
concurrent.futures semantics, and timeouts that really stop the work.
]],
}

dependencies = {
  "lua >= 5.4, < 5.5",
}

-- The Makefile accepts PREFIX, and LIBDIR / LUADIR / BINDIR overrides that
-- default to $(PREFIX)/lib/lua/5.4, $(PREFIX)/share/lua/5.4 and
-- $(PREFIX)/bin. LuaRocks substitutes each $(VAR) below with the rock's own
-- directories before calling make. CFLAGS is deliberately not passed (luarocks
-- warns about it): the Makefile keeps its own -std=c11 -Wall -Wextra -Werror.
build = {
  type = "make",
  build_variables = {
    LUA_INCDIR = "$(LUA_INCDIR)",
    PREFIX = "$(PREFIX)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
  },
  install_variables = {
    LUA_INCDIR = "$(LUA_INCDIR)",
    PREFIX = "$(PREFIX)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
    BINDIR = "$(BINDIR)",
  },
}
