#!/usr/bin/env bash
# The benchmark, from a fresh clone: installs what it needs, then runs benchmarks/run.py on
# SQLite with EdDSA (the default key), SQLite with HS256, MongoDB (the MongoDB-wire test
# server) with HS256, and PostgreSQL (a throwaway local cluster, or POSTGRES_URL) with HS256.
# Each run measures accounts-server served by uvicorn (every route), mounted under a host
# Starlette app and served by granian (GET /user, refresh, logout), accounts-js, and bare
# Starlette under uvicorn and under granian.
#
#   bash benchmarks/run.sh                  all four (about 35 minutes on a 2-core VM: 7.5 min
#                                           per SQLite run, 9 min for MongoDB, measured)
#   bash benchmarks/run.sh --rounds 1 ...   extra arguments go to every run.py call
#
# Installs: wrk and util-linux's taskset (apt-get, with sudo when not root), the accounts-js peer
# (npm ci in benchmarks/peer), and accounts-server with the password service and the [mongo]
# and [postgres] extras, plus granian, into .venv (and postgresql, from apt, when missing).
# Results: benchmarks/results/{sqlite-eddsa,sqlite-hs256,mongo-hs256,postgres-hs256}.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v wrk >/dev/null || ! command -v taskset >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk util-linux >/dev/null
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq postgresql >/dev/null || echo "no postgresql: its run will say so"
fi
npm ci --prefix benchmarks/peer --no-audit --no-fund --silent
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
# granian pinned to the version measured: its flags (servers.py --granian) change between minors.
pip install -q -e '.[mongo,postgres]' -e ./services/password 'granian==2.8.9'

mkdir -p benchmarks/results
python benchmarks/run.py --algorithm EdDSA --json benchmarks/results/sqlite-eddsa.json "$@"
python benchmarks/run.py --json benchmarks/results/sqlite-hs256.json "$@"
python benchmarks/run.py --store mongo --json benchmarks/results/mongo-hs256.json "$@"
python benchmarks/run.py --store postgres --json benchmarks/results/postgres-hs256.json "$@"
