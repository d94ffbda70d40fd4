#!/bin/sh
# The quick start end to end (what `make example` runs, against the database
# in $LUA_SCHEDULER_DATABASE): start the lua-scheduler command on the example
# listeners, schedule the two jobs, watch them run on time, stop.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}

# migrate first: it creates the database (an SQLite file on the first run),
# which `schedule` never does, and `run` may not have yet
"$LUA" bin/lua-scheduler migrate >/dev/null 2>&1
"$LUA" bin/lua-scheduler run --log-level warn examples/listeners &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true' EXIT

examples/schedule_examples.sh >/dev/null
echo "scheduled SendEmail and PayBills, 1 s and 2 s from now; waiting for them..."
sleep 3
