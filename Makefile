# weft -- build, install, test, bench, demo.
#   make                  build the module, the programs, libweft.so and the example host
#   make test             bootstrap, build, run every spec
#   make demo             bootstrap, build, run an example flow
#   make bench            speed and memory figures beside Python's
#   make install PREFIX=/usr/local

PREFIX  ?= /usr/local
SYSLIBDIR ?= $(PREFIX)/lib
PCDIR   ?= $(SYSLIBDIR)/pkgconfig
LIBDIR  ?= $(PREFIX)/lib/lua/5.4
LUADIR  ?= $(PREFIX)/share/lua/5.4
BINDIR  ?= $(PREFIX)/bin
INCDIR  ?= $(PREFIX)/include
LUA_INCDIR ?= /usr/include/lua5.4

CC      ?= cc
CFLAGS  ?= -O2 -g
WEFT_CFLAGS = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -pthread \
              -I$(LUA_INCDIR) -Iruntime/include -Iruntime/src \
              -DWEFT_LIBDIR='"$(LIBDIR)"' -DWEFT_LUADIR='"$(LUADIR)"'
LUA_LIBS = -llua5.4

BUILD   = build
SRCS    = runtime/src/lweft.c runtime/src/proto.c runtime/src/wire.c \
          runtime/src/future.c runtime/src/pool.c runtime/src/run.c \
          runtime/src/deadline.c runtime/src/stop.c runtime/src/child.c \
          runtime/src/procs.c runtime/src/serve.c runtime/src/host.c \
          runtime/src/log.c
OBJS    = $(SRCS:runtime/src/%.c=$(BUILD)/obj/%.o)
HDRS    = $(wildcard runtime/src/*.h) runtime/include/weft.h

LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;" \
          LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;"

.PHONY: all test demo bench install clean bootstrap check-tsan

all: $(BUILD)/weft/core.so $(BUILD)/weft/weft $(BUILD)/weft/weft-worker \
     $(BUILD)/libweft.so $(BUILD)/weft.pc $(BUILD)/examples/host

$(BUILD)/obj/%.o: runtime/src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -c -o $@ $<

# The Lua interpreter exports its API to loaded modules: the module does
# not link liblua itself (as Debian's Lua modules do).
$(BUILD)/weft/core.so: $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -pthread $(CFLAGS) -o $@ $(OBJS)

$(BUILD)/weft/weft: runtime/cli/weft.c $(OBJS)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ runtime/cli/weft.c \
	  $(OBJS) $(LUA_LIBS) -lreadline -lm -ldl

# The worker entry point, found next to core.so (see runtime/src/child.h).
$(BUILD)/weft/weft-worker: runtime/cli/weft-worker.c $(OBJS)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ runtime/cli/weft-worker.c $(OBJS) $(LUA_LIBS) -lm -ldl

# The library for C hosts (weft.h): the same objects; Lua's API comes from
# the host's own liblua.
$(BUILD)/libweft.so: $(OBJS)
	$(CC) -shared -pthread $(CFLAGS) -Wl,-soname,libweft.so.0 -o $@ $(OBJS)

$(BUILD)/weft.pc: weft.pc.in Makefile
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@SYSLIBDIR@|$(SYSLIBDIR)|; s|@INCDIR@|$(INCDIR)|' \
	  -e 's|@VERSION@|'"$$(sed -n 's/^#define WEFT_VERSION "\(.*\)"/\1/p' runtime/include/weft.h)"'|' \
	  weft.pc.in > $@

# The example host, built here from the objects (after `make install` it
# builds with pkg-config alone: see its header).
$(BUILD)/examples/host: scripts/examples/host.c $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ scripts/examples/host.c $(OBJS) $(LUA_LIBS) -lm -ldl

bootstrap:
	@scripts/bootstrap

test: bootstrap all
	@scripts/test

demo: bootstrap all
	$(BUILD)/weft/weft run scripts/examples/etl.lua

# The thread specs under ThreadSanitizer (builds its own tree, build/tsan).
check-tsan: bootstrap
	@scripts/check/tsan

bench: all
	lua5.4 scripts/bench/run

install: all
	install -d $(DESTDIR)$(LIBDIR)/weft $(DESTDIR)$(LUADIR)/weft $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(INCDIR) $(DESTDIR)$(SYSLIBDIR) $(DESTDIR)$(PCDIR)
	install -m 755 $(BUILD)/weft/core.so $(DESTDIR)$(LIBDIR)/weft/core.so
	install -m 755 $(BUILD)/weft/weft-worker $(DESTDIR)$(LIBDIR)/weft/weft-worker
	install -m 644 lua/weft/*.lua $(DESTDIR)$(LUADIR)/weft/
	install -m 755 $(BUILD)/weft/weft $(DESTDIR)$(BINDIR)/weft
	install -m 644 runtime/include/weft.h $(DESTDIR)$(INCDIR)/weft.h
	install -m 755 $(BUILD)/libweft.so $(DESTDIR)$(SYSLIBDIR)/libweft.so.0
	ln -sf libweft.so.0 $(DESTDIR)$(SYSLIBDIR)/libweft.so
	install -m 644 $(BUILD)/weft.pc $(DESTDIR)$(PCDIR)/weft.pc
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

clean:
	rm -rf $(BUILD)
