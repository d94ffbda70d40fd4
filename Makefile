# lua-scheduler — build, test and packaging checks.
#
#   make                    build $(BUILD)/scheduler/core.so
#   make test               install deps, build, run the busted specs on both backends
#                           at once, each with a throwaway PostgreSQL cluster (scripts/pgtmp)
#   make test BUSTED_ARGS="spec/foo_spec.lua"
#   make test BACKENDS=sqlite   one backend only, output as it comes (default: postgresql sqlite)
#   make demo               the quick start with nothing to set up: EXAMPLE on
#                           the default SQLite database (./scheduler.db), no server
#   make test SANITIZE=1    same, with ASan+UBSan (builds into build/asan)
#   make test-memory        same, also checking for leaks (LSan): fails on any invalid
#                           access and any leak in our code (scripts/memory-report)
#   make example            the quick start against a throwaway cluster: examples/demo.sh
#                           (bin/lua-scheduler on examples/listeners; EXAMPLE=x.lua runs a
#                           Lua script instead, e.g. examples/quickstart.lua)
#   make rock-check         luarocks make into a temp tree and require it from there
#   make bench              run the benchmarks (bench/run.lua) against a throwaway
#                           cluster: table on stdout, figures in bench/results.json
#   make bench BENCH_ARGS=--smoke     tiny sizes, seconds (what CI runs)
#   make bench BASELINE=88be5e1       also drain with that revision's build, same run
#   make fuzz               libFuzzer harnesses of every C parser (fuzz/), FUZZ_SECONDS
#                           (300) each; `make fuzz-smoke`: FUZZ_SMOKE_SECONDS (6) each (CI)
#   make test-faults        the fault suite (faults/run.lua) against its own throwaway
#                           cluster: kills, restarts, skew, secrets; report table on
#                           stdout, figures in faults/results.json; exit 1 if a job is lost
#   make test-faults FAULTS_ARGS="--only load --scale 0.2"
#   make test-web           the web dashboard in headless Chromium (chromedriver) against
#                           a throwaway cluster and real workers (webtest/run.lua);
#                           screenshots in build/web-screenshots/
#   make deps | clean
#
# Every tool and path below can be overridden on the command line.

SHELL := /bin/bash

LUA          ?= lua5.4
BUSTED       ?= /usr/bin/busted
BUSTED_ARGS  ?=
# The suite runs once per backend (a full busted run each, each with its own
# summary line): PostgreSQL on the throwaway cluster, SQLite on a fresh file.
BACKENDS     ?= postgresql sqlite
# Each backend's spec files split into SHARDS busted runs at once, each with
# its own cluster (see test-backends); BUSTED_ARGS naming spec files: one.
SHARDS       ?= 2
BENCH_ARGS   ?=
FAULTS_ARGS  ?=
LUAROCKS     ?= luarocks
PKG_CONFIG   ?= pkg-config
LUA_PC       ?= lua5.4
PQ_PC        ?= libpq
SQLITE_PC    ?= sqlite3
PGTMP        ?= $(CURDIR)/scripts/pgtmp
INSTALL_DEPS ?= $(CURDIR)/scripts/install-deps
# Parent directory for throwaway clusters: must be reachable by the `postgres`
# user when running as root, and short (Unix socket path limit).
PGTMP_ROOT   ?= /tmp
ROCKSPEC     ?= rockspec/lua-scheduler-scm-1.rockspec
EXAMPLE      ?= examples/demo.sh
SRCDIR       ?= csrc
LUADIR       ?= lua

ifeq ($(origin CC),default)
CC := gcc
endif

SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD     ?= build/asan
SAN_FLAGS ?= -fsanitize=address,undefined -fno-omit-frame-pointer
# never unloaded (lua_close dlcloses C modules before the leak check at
# exit), so that leak reports can name our functions
SAN_LDFLAGS ?= -Wl,-z,nodelete
else
BUILD     ?= build
SAN_FLAGS ?=
SAN_LDFLAGS ?=
endif

# -Werror in CI (CI set to anything but 0/false/no) or with WERROR=1.
WERROR ?=
ifneq ($(filter-out 0 false no,$(CI)),)
WERROR := 1
endif

CSTD      ?= -std=c11
WARNFLAGS ?= -Wall -Wextra -Wpedantic $(if $(filter 1,$(WERROR)),-Werror)
CFLAGS    ?= -O2 -g
# -std=c11 hides POSIX; sources may also #define _POSIX_C_SOURCE 200809L or
# _GNU_SOURCE themselves (compatible with this).
FEATURES  ?= -D_POSIX_C_SOURCE=200809L
CPPFLAGS  ?=
LDFLAGS   ?=
LIBS      ?= -lpthread

# Deferred (=) so pkg-config runs only when compiling, after `make deps`.
LUA_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(LUA_PC))
PQ_CFLAGS  = $(shell $(PKG_CONFIG) --cflags $(PQ_PC))
PQ_LIBS    = $(shell $(PKG_CONFIG) --libs $(PQ_PC))
SQLITE_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(SQLITE_PC))
SQLITE_LIBS   = $(shell $(PKG_CONFIG) --libs $(SQLITE_PC))

ALL_CFLAGS  = $(CSTD) $(WARNFLAGS) $(CFLAGS) -fPIC $(SAN_FLAGS) \
              $(FEATURES) $(CPPFLAGS) $(LUA_CFLAGS) $(PQ_CFLAGS) $(SQLITE_CFLAGS)
# Not linked against liblua: the interpreter provides the Lua API symbols.
ALL_LDFLAGS = -shared $(SAN_FLAGS) $(SAN_LDFLAGS) $(LDFLAGS)

SRCS := $(wildcard $(SRCDIR)/*.c)
OBJS := $(patsubst $(SRCDIR)/%.c,$(BUILD)/obj/%.o,$(SRCS))
SO   := $(BUILD)/scheduler/core.so
# Test-only C modules (not in the rock): spec.memlimit, an allocator that
# refuses allocations on request (specs and faults provoke memory errors);
# spec.notifysock, a unix datagram socket receiving sd_notify messages;
# spec.crash, a worker ending itself mid-job without exit handlers.
TEST_SO := $(BUILD)/spec/memlimit.so $(BUILD)/spec/notifysock.so $(BUILD)/spec/crash.so

# Sanitizers (SANITIZE=1): lua5.4 itself is not instrumented, so the ASan
# runtime must be the first DSO in the process: LD_PRELOAD=libasan.so
# (libubsan is then loaded as a normal dependency of core.so). Leak checking
# is off: the interpreter, busted and their C modules are not instrumented and
# do not free everything at exit. LD_PRELOAD is exported so lua5.4 processes
# that specs spawn are covered too; but uninstrumented programs *linked*
# against libpq (psql, pg_isready, pgbench, ...) hang at exit under a
# preloaded ASan (libp11-kit's destructor deadlocks in freelocale), so
# $(BUILD)/sanbin gets wrappers for every PostgreSQL binary that drop
# LD_PRELOAD; it goes first in PATH and becomes PGTMP_BIN.
ASAN_LIB      ?= $(shell $(CC) -print-file-name=libasan.so)
ASAN_OPTIONS  ?= detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_odr_violation=0
UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
LSAN_OPTIONS  ?=
ifeq ($(SANITIZE),1)
define SAN_ENV
sanbin='$(CURDIR)/$(BUILD)/sanbin'; mkdir -p "$$sanbin"; \
for exe in "$$PGTMP_BIN"/*; do \
  printf '#!/bin/sh\nunset LD_PRELOAD\nexec "%s" "$$@"\n' "$$exe" > "$$sanbin/$${exe##*/}"; \
  chmod +x "$$sanbin/$${exe##*/}"; \
done; \
export PATH="$$sanbin:$$PATH" PGTMP_BIN="$$sanbin" \
       LD_PRELOAD='$(ASAN_LIB)' ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
       LSAN_OPTIONS='$(LSAN_OPTIONS)';
endef
else
SAN_ENV =
endif

LUA_PATH_VALUE  = $(CURDIR)/$(LUADIR)/?.lua;$(CURDIR)/$(LUADIR)/?/init.lua;;
LUA_CPATH_VALUE = $(CURDIR)/$(BUILD)/?.so;;

# Shell prologue: start a throwaway cluster in a fresh temp dir, always stop it
# on exit, and export the cluster env + module paths (exported so processes
# that specs spawn find the same modules and database).
define WITH_CLUSTER
set -euo pipefail; \
pgdir=$$(mktemp -d '$(PGTMP_ROOT)/lua-scheduler-pg.XXXXXX'); \
trap '"$(PGTMP)" stop "$$pgdir"' EXIT; \
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP; \
"$(PGTMP)" start "$$pgdir" --watch $$$$; \
. "$$pgdir/env"; \
unset LUA_PATH_5_4 LUA_CPATH_5_4; \
export LUA_PATH='$(LUA_PATH_VALUE)' LUA_CPATH='$(LUA_CPATH_VALUE)'; \
$(SAN_ENV)
endef

.PHONY: all build test-support deps test test-backends test-backend test-memory test-faults test-web example demo rock-check bench bench-rate-sqlite fuzz fuzz-smoke clean
.DEFAULT_GOAL := build

all: build

build: $(SO)

$(SO): $(OBJS)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(OBJS) $(PQ_LIBS) $(SQLITE_LIBS) $(LIBS)

$(BUILD)/obj/%.o: $(SRCDIR)/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

-include $(OBJS:.o=.d)

$(BUILD)/spec/%.so: spec/support/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $<

test-support: $(SO) $(TEST_SO)
	@:

deps:
	@"$(INSTALL_DEPS)"

# deps first, then build in a sub-make (so pkg-config and the compiler exist
# before anything is compiled, even with -j).
test: deps
	@$(MAKE) --no-print-directory test-support
	@$(MAKE) --no-print-directory test-backends

# The backends in BACKENDS at the same time, each with its own cluster: the
# suite mostly waits (on workers, timers, the database: a backend's run
# keeps about a quarter of a core busy), so two backends take little
# longer than one; and each backend's spec files in SHARDS runs at once
# (shard k of n: the files, largest first, each to the shard with the
# fewest bytes so far), each with its own cluster and summary line.  With
# more than one run, each run's output goes to a file, printed in order
# when all are done (or when the run is killed, by a timeout for
# instance); one runs in the foreground.
test-backends:
	@set -uo pipefail; shards=$(SHARDS); \
	case " $(BUSTED_ARGS) " in *spec/*|*_spec*) shards=1 ;; esac; \
	runs=; for b in $(BACKENDS); do \
	  if [ "$$shards" -le 1 ]; then runs="$$runs $$b"; \
	  else for k in $$(seq 1 "$$shards"); do runs="$$runs $$b:$$k/$$shards"; done; fi; \
	done; \
	set -- $$runs; \
	if [ $$# -eq 1 ]; then exec $(MAKE) --no-print-directory test-backend BACKEND=$$1; fi; \
	out=$$(mktemp -d '$(PGTMP_ROOT)/lua-scheduler-test.XXXXXX'); \
	show() { i=0; for r in $$runs; do i=$$((i + 1)); if [ -f "$$out/$$i" ]; then cat "$$out/$$i"; fi; done; rm -rf "$$out"; }; \
	trap show EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; \
	pids=; i=0; \
	for r in $$runs; do i=$$((i + 1)); \
	  $(MAKE) --no-print-directory test-backend BACKEND=$$r >"$$out/$$i" 2>&1 & pids="$$pids $$!"; \
	done; \
	status=0; for p in $$pids; do wait $$p || status=1; done; \
	exit $$status

# One backend's specs (BACKEND=postgresql or sqlite, or BACKEND:K/N for
# shard K of N: see test-backends) in a throwaway cluster; the specs of the
# other backend's tag are left out.
test-backend:
	@$(WITH_CLUSTER) \
	backend=$(BACKEND); shard=; \
	case "$$backend" in *:*/*) shard=$${backend#*:}; backend=$${backend%%:*} ;; esac; \
	case "$$backend" in \
	  postgresql) db=$$LUA_SCHEDULER_DATABASE; other=sqlite ;; \
	  sqlite) mkdir -p "$$pgdir/sqlite"; db="sqlite:$$pgdir/sqlite/test.db"; other=postgresql ;; \
	  *) echo "make test: unknown backend '$(BACKEND)' (BACKENDS: postgresql sqlite)" >&2; exit 2 ;; \
	esac; \
	files=; \
	if [ -n "$$shard" ]; then \
	  files=$$(find spec -name '*_spec.lua' -exec wc -c {} + | grep -v ' total$$' | sort -k1,1nr -k2 | \
	    awk -v k=$${shard%/*} -v n=$${shard#*/} '{ m = 1; for (i = 2; i <= n; i++) if (t[i] < t[m]) m = i; \
	      t[m] += $$1; if (m == k) print $$2 }'); \
	fi; \
	echo "== make test: $(BACKEND) ($$db)"; \
	LUA_SCHEDULER_DATABASE=$$db \
	"$(LUA)" "$(BUSTED)" --lpath='$(CURDIR)/$(LUADIR)/?.lua;$(CURDIR)/$(LUADIR)/?/init.lua' \
	    --cpath='$(CURDIR)/$(BUILD)/?.so' --exclude-tags=$$other $(BUSTED_ARGS) $$files

# The suite under ASan+UBSan with leak checking (issue 5).  Every process
# the specs start has the ASan runtime preloaded, and many programs (sh,
# mktemp, ...) do not free everything at exit, so leaks do not change exit
# codes (LSAN_OPTIONS exitcode=0): every process writes its reports to a
# file in a temporary directory, and scripts/memory-report fails on any
# invalid access or UBSan error and on any leak whose allocation went
# through our code.  busted closes its Lua state at exit, so what our
# userdata own is freed then, or reported.  The backends run at the same
# time, as in make test: under ASan a backend takes about 6 minutes.
# LeakSanitizer can fail in itself at a process's exit (memory-report says
# so), and that process's exit status is then LSAN_OPTIONS' exitcode (0):
# when the process is busted itself, its failures would not fail the run.
# So the run also needs, for each backend, busted's summary line with 0
# failures and 0 errors (spec/helper.lua line-buffers stdout, so that the
# summary is written before the exit).  Not in shards (SHARDS=1): under
# ASan a backend's run keeps about 0.7 of a core busy, so four runs at once
# fill 2 cores (9 minutes instead of 10.5, and timing specs failed).
test-memory: deps
	@$(MAKE) --no-print-directory test-support SANITIZE=1
	@logs=$$(mktemp -d '$(PGTMP_ROOT)/lua-scheduler-memory.XXXXXX'); \
	trap 'rm -rf "$$logs"' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; \
	status=0; set -o pipefail; \
	$(MAKE) --no-print-directory test-backends SANITIZE=1 SHARDS=1 \
	  ASAN_OPTIONS='detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_odr_violation=0:log_path='"$$logs"/asan \
	  LSAN_OPTIONS=exitcode=0 \
	  UBSAN_OPTIONS='halt_on_error=1:print_stacktrace=1:log_path='"$$logs"/ubsan 2>&1 | tee "$$logs/out" \
	  || status=1; \
	set -- $(BACKENDS); runs=$$#; \
	clean=$$(sed 's/\x1b\[[0-9;]*m//g' "$$logs/out" | grep -cE '^[0-9]+ success(es)? / 0 failures? / 0 errors?'); \
	if [ "$$clean" -ne $$runs ]; then \
	  echo "memory: $$clean of $$runs runs printed a summary with 0 failures and 0 errors" >&2; status=1; \
	fi; \
	rm -f "$$logs/out"; \
	"$(CURDIR)/scripts/memory-report" "$$logs" || status=1; \
	exit $$status

example: deps
	@$(MAKE) --no-print-directory -q $(SO) 2>/dev/null || $(MAKE) --no-print-directory build
	@$(WITH_CLUSTER) \
	case "$(EXAMPLE)" in *.lua) "$(LUA)" "$(EXAMPLE)" ;; *) LUA="$(LUA)" "$(EXAMPLE)" ;; esac

# The same example with no server and no configuration: the default database,
# the SQLite file scheduler.db in the working directory (this checkout).
demo: deps
	@$(MAKE) --no-print-directory -q $(SO) 2>/dev/null || $(MAKE) --no-print-directory build
	@set -euo pipefail; unset LUA_SCHEDULER_DATABASE LUA_PATH_5_4 LUA_CPATH_5_4; \
	export LUA_PATH='$(LUA_PATH_VALUE)' LUA_CPATH='$(LUA_CPATH_VALUE)'; \
	case "$(EXAMPLE)" in *.lua) "$(LUA)" "$(EXAMPLE)" ;; *) LUA="$(LUA)" "$(EXAMPLE)" ;; esac

# Benchmarks (issue 3): not a test; prints a table, writes bench/results.json.
# BASELINE=REV: also drain with a build of git revision REV in the same run
# (bench/run.lua --baseline), exported and built under build/baseline/REV.
BASELINE ?=
BASELINE_DIR = $(CURDIR)/build/baseline/$(BASELINE)
bench: deps
	@$(MAKE) --no-print-directory -q $(SO) 2>/dev/null || $(MAKE) --no-print-directory build
	@if [ -n "$(BASELINE)" ]; then \
	  rm -rf "$(BASELINE_DIR)" && mkdir -p "$(BASELINE_DIR)" && \
	  git -C "$(CURDIR)" archive "$(BASELINE)" | tar -x -C "$(BASELINE_DIR)" && \
	  git -C "$(CURDIR)" rev-parse --short "$(BASELINE)" > "$(BASELINE_DIR)/.rev" && \
	  $(MAKE) --no-print-directory -C "$(BASELINE_DIR)" build >/dev/null || exit 1; \
	fi
	@$(WITH_CLUSTER) \
	"$(LUA)" "$(CURDIR)/bench/run.lua" --lua "$(LUA)" \
	  $(if $(BASELINE),--baseline "$(BASELINE_DIR)") $(BENCH_ARGS)

# The rate row on SQLite (bench/rate_sqlite.lua: bench/run.lua's rows are
# PostgreSQL's): a fresh SQLite file, no cluster.
bench-rate-sqlite: deps
	@$(MAKE) --no-print-directory -q $(SO) 2>/dev/null || $(MAKE) --no-print-directory build
	@unset LUA_SCHEDULER_DATABASE LUA_PATH_5_4 LUA_CPATH_5_4; \
	export LUA_PATH='$(LUA_PATH_VALUE)' LUA_CPATH='$(LUA_CPATH_VALUE)'; \
	"$(LUA)" "$(CURDIR)/bench/rate_sqlite.lua" $(BENCH_ARGS)

# Fuzzing (issue 5): one libFuzzer harness per C entry point that parses
# input, fuzz/<target>.c, compiled by clang together with the csrc/ files it
# needs, under ASan+UBSan (+LSan).  fuzz/run runs them (seeds in
# fuzz/corpus/<target>; what a run finds is kept in build/fuzz/corpus).
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 300
FUZZ_SMOKE_SECONDS ?= 6
FUZZ_TARGETS       := json_decode json_encode database_string pg_text
FUZZ_BINS          := $(addprefix build/fuzz/,$(FUZZ_TARGETS))
FUZZ_CFLAGS = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer $(CSTD) $(WARNFLAGS) $(FEATURES) \
              $(LUA_CFLAGS) $(PQ_CFLAGS) $(SQLITE_CFLAGS)
LUA_LIBS = $(shell $(PKG_CONFIG) --libs $(LUA_PC))
FUZZ_json_decode     = $(SRCDIR)/json.c $(SRCDIR)/buf.c
FUZZ_json_encode     = $(SRCDIR)/json.c $(SRCDIR)/buf.c
FUZZ_STORE_PG        = $(wildcard $(SRCDIR)/store_pg*.c)
FUZZ_database_string = $(SRCDIR)/store.c $(FUZZ_STORE_PG) $(SRCDIR)/store_sqlite.c $(SRCDIR)/buf.c
FUZZ_pg_text         = $(SRCDIR)/store.c $(FUZZ_STORE_PG) $(SRCDIR)/store_sqlite.c $(SRCDIR)/buf.c
FUZZ_LIBS = $(LUA_LIBS) $(PQ_LIBS) $(SQLITE_LIBS) -lpthread -lm

build/fuzz/%: fuzz/%.c fuzz/lua_value.h $(wildcard $(SRCDIR)/*.c $(SRCDIR)/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_$*) $(FUZZ_LIBS)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@fuzz/run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@fuzz/run $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

# The fault suite (issue 5): a test, not a benchmark: exit 1 when a job is
# lost or a check fails.  Scenarios restart and reconfigure the cluster.
test-faults: deps
	@$(MAKE) --no-print-directory test-support
	@$(WITH_CLUSTER) \
	"$(LUA)" "$(CURDIR)/faults/run.lua" $(FAULTS_ARGS)

# The web dashboard in a real browser (issue 15): headless Chromium driven
# through chromedriver (W3C WebDriver, from Lua over lua-http) against the
# throwaway cluster, with real workers (lua-scheduler run) and three
# dashboards (plain, --read-only, --token); exit 1 if a check fails.
WEB_ARGS ?=
test-web: deps
	@$(MAKE) --no-print-directory build
	@$(WITH_CLUSTER) \
	"$(LUA)" "$(CURDIR)/webtest/run.lua" --out "$(CURDIR)/build/web-screenshots" $(WEB_ARGS)

# Copy the source tree (minus build output and .git) to a temp dir, build and
# install the rock from there into a temp tree, then require it from another
# directory with the module paths pointing only into that tree.
rock-check: deps
	@set -euo pipefail; \
	for f in $(SRCS); do grep -q "\"$$f\"" "$(ROCKSPEC)" || unlisted="$${unlisted-} $$f"; done; \
	if [[ -n $${unlisted-} ]]; then echo "rock-check: C sources missing from $(ROCKSPEC):$$unlisted" >&2; exit 1; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src" "$$tmp/tree" "$$tmp/elsewhere"; \
	tar -c --exclude=./.git --exclude=./build --exclude=./build-asan --exclude=./.tmp . | tar -x -C "$$tmp/src"; \
	(cd "$$tmp/src" && "$(LUAROCKS)" --lua-version=5.4 make --deps-mode=none --tree="$$tmp/tree" "$(ROCKSPEC)" \
	    PQ_INCDIR="$$($(PKG_CONFIG) --variable=includedir $(PQ_PC))" \
	    PQ_LIBDIR="$$($(PKG_CONFIG) --variable=libdir $(PQ_PC))" \
	    SQLITE_INCDIR="$$($(PKG_CONFIG) --variable=includedir $(SQLITE_PC))" \
	    SQLITE_LIBDIR="$$($(PKG_CONFIG) --variable=libdir $(SQLITE_PC))"); \
	cd "$$tmp/elsewhere"; \
	env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 \
	    LUA_PATH="$$tmp/tree/share/lua/5.4/?.lua;$$tmp/tree/share/lua/5.4/?/init.lua" \
	    LUA_CPATH="$$tmp/tree/lib/lua/5.4/?.so" \
	    "$(LUA)" -e 'require "scheduler"; require "scheduler.core"; require "scheduler.web"' \
	          -e 'print("rock-check: ok: " .. package.searchpath("scheduler", package.path) .. ", " .. package.searchpath("scheduler.core", package.cpath))'

clean:
	rm -rf build build-asan $(filter-out build build/% build-asan,$(BUILD))
