# weft -- build, install, test, bench, demo.
#   make                  build the module, the programs, libweft.so and the example host
#   make test             bootstrap, build, run every spec and check
#   make check            make test, and the long sweeps (scripts/check/full/): CI
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
DEP_LIBS = -lsodium -lhiredis

BUILD   = build
SRCS    = runtime/src/lweft.c runtime/src/proto.c runtime/src/wire.c \
          runtime/src/future.c runtime/src/pool.c runtime/src/run.c \
          runtime/src/deadline.c runtime/src/stop.c runtime/src/child.c \
          runtime/src/procs.c runtime/src/serve.c runtime/src/host.c \
          runtime/src/log.c runtime/src/rmsg.c runtime/src/rconn.c \
          runtime/src/rclient.c runtime/src/rworker.c
OBJS    = $(SRCS:runtime/src/%.c=$(BUILD)/obj/%.o)
HDRS    = $(wildcard runtime/src/*.h) runtime/include/weft.h

LUA_ENV = LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;" \
          LUA_CPATH="$(CURDIR)/$(BUILD)/?.so;;"

.PHONY: all test check demo bench install clean bootstrap check-asan check-leaks fuzz fuzz-build check-fuzz check-tsan stress check-stress fleet-chaos

all: $(BUILD)/weft/core.so $(BUILD)/weft/weft $(BUILD)/weft/weft-worker \
     $(BUILD)/libweft.so $(BUILD)/weft.pc $(BUILD)/examples/host

$(BUILD)/obj/%.o: runtime/src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -c -o $@ $<

# The Lua interpreter exports its API to loaded modules: the module does
# not link liblua itself (as Debian's Lua modules do).
$(BUILD)/weft/core.so: $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared -pthread $(CFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

$(BUILD)/weft/weft: runtime/cli/weft.c $(OBJS)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ runtime/cli/weft.c \
	  $(OBJS) $(LUA_LIBS) -lreadline $(DEP_LIBS) -lm -ldl

# The worker entry point, found next to core.so (see runtime/src/child.h).
$(BUILD)/weft/weft-worker: runtime/cli/weft-worker.c $(OBJS)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ runtime/cli/weft-worker.c $(OBJS) $(LUA_LIBS) $(DEP_LIBS) -lm -ldl

# The library for C hosts (weft.h): the same objects; Lua's API comes from
# the host's own liblua.
$(BUILD)/libweft.so: $(OBJS)
	$(CC) -shared -pthread $(CFLAGS) -Wl,-soname,libweft.so.0 -o $@ $(OBJS) $(DEP_LIBS)

$(BUILD)/weft.pc: weft.pc.in Makefile
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@SYSLIBDIR@|$(SYSLIBDIR)|; s|@INCDIR@|$(INCDIR)|' \
	  -e 's|@VERSION@|'"$$(sed -n 's/^#define WEFT_VERSION "\(.*\)"/\1/p' runtime/include/weft.h)"'|' \
	  weft.pc.in > $@

# The example host, built here from the objects (after `make install` it
# builds with pkg-config alone: see its header).
$(BUILD)/examples/host: scripts/examples/host.c $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(WEFT_CFLAGS) $(CFLAGS) -o $@ scripts/examples/host.c $(OBJS) $(LUA_LIBS) $(DEP_LIBS) -lm -ldl

# === fuzzing: libFuzzer (clang), ASan and UBSan =========================
#   make fuzz                   runs each target FUZZ_SECONDS (default 60)
#   make fuzz FUZZ_SECONDS=600  longer
#   make fuzz-build             just builds build/fuzz/<target>
# Targets (harness spec/fuzz/<target>_fuzz.c, seeds spec/fuzz/<target>/):
#   wire    the wire decoder: results, error records, task messages
#   frames  the process pool's reader of what a worker sends (procs.c)
#   redis   the Redis executor's task and result messages, signed or not
#           (rmsg.c), and what they carry through the wire decoder
#   roundtrip  values built from the input, encoded, decoded and compared
#           (the encoder and decoder together: nothing dropped or changed)
# New inputs go to build/fuzz/corpus/<target> (spec/fuzz/<target> is only
# read); a crash is written to build/fuzz/crashes/: fix it, then copy the
# input into spec/fuzz/<target>/ as a regression input.
FUZZ_TARGETS = wire frames redis roundtrip
FUZZ_SECONDS ?= 60
FUZZ_CC   = clang
FUZZ_SAN  = -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
            -fno-sanitize-recover=all
FUZZ      = $(BUILD)/fuzz
FUZZ_OBJS = $(SRCS:runtime/src/%.c=$(FUZZ)/obj/%.o)
FUZZ_RUN  = -max_len=65536 -timeout=10 -rss_limit_mb=2048
FUZZ_DEFS = -DWEFT_FUZZ_LUADIR='"$(CURDIR)/lua"'   # weft's Lua layer, for the harnesses
# The frames harness includes procs.c (its frame reader is static).
FUZZ_OBJS_frames = $(filter-out $(FUZZ)/obj/procs.o,$(FUZZ_OBJS))
FUZZ_OBJS_wire = $(FUZZ_OBJS)
FUZZ_OBJS_redis = $(FUZZ_OBJS)
FUZZ_OBJS_roundtrip = $(FUZZ_OBJS)

$(FUZZ)/obj/%.o: runtime/src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(WEFT_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_TARGETS:%=$(FUZZ)/%): $(FUZZ)/%: spec/fuzz/%_fuzz.c spec/fuzz/lua_reset.h $(FUZZ_OBJS) runtime/src/procs.c
	$(FUZZ_CC) $(WEFT_CFLAGS) $(FUZZ_DEFS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< \
	  $(FUZZ_OBJS_$*) $(LUA_LIBS) $(DEP_LIBS) -lm -ldl

# The same harnesses without libFuzzer or sanitizers, for valgrind (it
# sees inside liblua, which the sanitizer build does not instrument).
$(FUZZ_TARGETS:%=$(FUZZ)/%-replay): $(FUZZ)/%-replay: spec/fuzz/%_fuzz.c spec/fuzz/replay_main.c \
    spec/fuzz/lua_reset.h $(OBJS) runtime/src/procs.c
	@mkdir -p $(dir $@)
	$(CC) $(WEFT_CFLAGS) $(FUZZ_DEFS) -g -O1 -o $@ $< spec/fuzz/replay_main.c \
	  $(if $(filter frames,$*),$(filter-out $(BUILD)/obj/procs.o,$(OBJS)),$(OBJS)) $(LUA_LIBS) $(DEP_LIBS) -lm -ldl

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ)/%) $(FUZZ_TARGETS:%=$(FUZZ)/%-replay)

fuzz: bootstrap fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ)/corpus/$$t $(FUZZ)/crashes; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ)/$$t $(FUZZ_RUN) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ)/crashes/$$t- $(FUZZ)/corpus/$$t spec/fuzz/$$t || exit 1; \
	done

check-fuzz: bootstrap all fuzz-build
	@scripts/check/fuzz

# The soak (spec/stress/soak.lua): in full here; scripts/check/stress (in
# make test) runs a shortened form.
stress: bootstrap all
	$(LUA_ENV) lua5.4 spec/stress/soak.lua
	$(LUA_ENV) lua5.4 spec/stress/chaos.lua

check-stress: bootstrap all
	@scripts/check/stress

# The chaos soak of the Redis executor (spec/stress/fleet_chaos.lua): in
# full here; scripts/check/fleet_chaos (in make test) runs a shortened form.
fleet-chaos: bootstrap all
	@CHAOS_TASKS=30000 CHAOS_SECONDS=120 scripts/check/fleet_chaos

bootstrap:
	@scripts/bootstrap

test: bootstrap all
	@scripts/test

check: bootstrap all
	@WEFT_FULL=1 scripts/test

demo: bootstrap all
	$(BUILD)/weft/weft run scripts/examples/etl.lua

# The thread specs under ThreadSanitizer (builds its own tree, build/tsan).
check-tsan: bootstrap
	@scripts/check/tsan

# One check of scripts/check/ (scripts/test runs them all after the specs).
# check-asan builds its own tree (build/asan); check-leaks runs valgrind
# over this one.
check-asan: bootstrap
	@scripts/check/asan
check-leaks: bootstrap all
	@scripts/check/leaks

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
