-- Build from a checkout with:
--   luarocks --lua-version=5.4 make --deps-mode=none rockspec/lua-scheduler-scm-1.rockspec \
--     PQ_INCDIR=$(pkg-config --variable=includedir libpq) \
--     PQ_LIBDIR=$(pkg-config --variable=libdir libpq) \
--     SQLITE_INCDIR=$(pkg-config --variable=includedir sqlite3) \
--     SQLITE_LIBDIR=$(pkg-config --variable=libdir sqlite3)
-- (`make rock-check` does this into a temporary tree.)
rockspec_format = "3.0"
package = "lua-scheduler"
version = "scm-1"

source = {
  -- placeholder: `luarocks make` builds from the current checkout
  url = "git+file:///dev/null/lua-scheduler.git",
  branch = "main",
}

description = {
  summary = "Durable job scheduler for Lua 5.4 backed by SQLite or PostgreSQL",
  detailed = [[
A durable job scheduler: a C core (scheduler.core, using libpq and SQLite)
and a Lua module (scheduler) storing jobs in an SQLite file or in
PostgreSQL, with the lua-scheduler command.
]],
  license = "MIT",
}

dependencies = {
  "lua >= 5.4",
}

external_dependencies = {
  PQ = {
    header = "libpq-fe.h",
  },
  SQLITE = {
    header = "sqlite3.h",
    library = "sqlite3",
  },
}

build = {
  type = "builtin",
  modules = {
    -- C core: every csrc/*.c must be listed here (keep in sync with csrc/).
    ["scheduler.core"] = {
      sources = {
        "csrc/buf.c",
        "csrc/store.c",
        "csrc/json.c",
        "csrc/store_pg.c",
        "csrc/store_pg_enqueue.c",
        "csrc/store_pg_claim.c",
        "csrc/store_pg_crash.c",
        "csrc/store_pg_cancel.c",
        "csrc/store_pg_wake.c",
        "csrc/store_pg_operators.c",
        "csrc/store_pg_history.c",
        "csrc/store_sqlite.c",
        "csrc/loop.c",
        "csrc/dispatch.c",
        "csrc/heartbeat.c",
        "csrc/fetcher.c",
        "csrc/concurrent.c",
        "csrc/signals.c",
        "csrc/core.c",
        "csrc/dir.c",
        "csrc/process.c",
        "csrc/notify.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L" },
      incdirs = { "csrc", "$(PQ_INCDIR)", "$(SQLITE_INCDIR)" },
      libdirs = { "$(PQ_LIBDIR)", "$(SQLITE_LIBDIR)" },
      libraries = { "pq", "sqlite3", "pthread" },
    },

    -- Lua modules: add each new lua/scheduler/*.lua here.
    ["scheduler"] = "lua/scheduler.lua",
    ["scheduler.cron"] = "lua/scheduler/cron.lua",
    ["scheduler.tz"] = "lua/scheduler/tz.lua",
    ["scheduler.concurrent"] = "lua/scheduler/concurrent.lua",
    ["scheduler.cqueues"] = "lua/scheduler/cqueues.lua",
    ["scheduler.luv"] = "lua/scheduler/luv.lua",
    ["scheduler.metrics"] = "lua/scheduler/metrics.lua",
    -- the lua-scheduler command (bin/lua-scheduler)
    ["scheduler.cli"] = "lua/scheduler/cli.lua",
    ["scheduler.cli.db"] = "lua/scheduler/cli/db.lua",
    ["scheduler.cli.errors"] = "lua/scheduler/cli/errors.lua",
    ["scheduler.cli.listeners"] = "lua/scheduler/cli/listeners.lua",
    ["scheduler.cli.run"] = "lua/scheduler/cli/run.lua",
    ["scheduler.cli.text"] = "lua/scheduler/cli/text.lua",
    -- the web dashboard (lua-scheduler web; needs lua-http at run time);
    -- its CSS and JavaScript are strings in scheduler.web.assets
    ["scheduler.web"] = "lua/scheduler/web.lua",
    ["scheduler.web.html"] = "lua/scheduler/web/html.lua",
    ["scheduler.web.assets"] = "lua/scheduler/web/assets.lua",
  },
  install = { bin = { ["lua-scheduler"] = "bin/lua-scheduler" } },
}
