#!/bin/sh
# Schedule one SendEmail job 1 s ahead and one PayBills job 2 s ahead, for
# the listeners in examples/listeners (run by `bin/lua-scheduler run
# examples/listeners`), which print each job when it runs.  Each command
# prints the new job's id.  Database: --database URL or $LUA_SCHEDULER_DATABASE.
set -eu
cd "$(dirname "$0")/.."
LUA=${LUA:-lua5.4}

"$LUA" bin/lua-scheduler schedule SendEmail '{"to": "ada@example.com"}' --in 1s "$@"
"$LUA" bin/lua-scheduler schedule PayBills '{"account": "ACME-42", "amount": 99.5}' --in 2s "$@"
