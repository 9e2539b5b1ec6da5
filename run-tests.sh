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
exec "$root/.venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
