#!/usr/bin/env bash
# Runs the test suite (sets up the environment first, like spark-submit.sh).
# Extra arguments go to pytest, e.g. ./run-tests.sh -k match -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# Petastorm warns at interpreter exit, after pytest has stopped filtering warnings.
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning:petastorm.fs_utils}"
# The Postgres tests (source and export) need a server: a throwaway local one. If it
# cannot start, the other tests still run and those fail saying why.
"$root/scripts/postgres.sh" start || echo "warning: no local PostgreSQL; the Postgres tests will fail" >&2
exec "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
