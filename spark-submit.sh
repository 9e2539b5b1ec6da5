#!/usr/bin/env bash
# The one way to run a job, locally or against a cluster:
#
#   ./spark-submit.sh <job> [--conf FILE] [--set key=value ...]
#
# jobs: ingest synthesize features train embed index match evaluate audit export pipeline
# The first call sets up the environment (scripts/bootstrap.sh); later calls reuse it.
# Extra spark-submit options (a cluster master, executor memory) go in SPARK_SUBMIT_ARGS,
# e.g. SPARK_SUBMIT_ARGS="--master yarn --num-executors 4", with --set spark.master=
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jobs="ingest synthesize features train embed index match evaluate audit export pipeline"
usage() { echo "usage: ./spark-submit.sh <job> [--conf FILE] [--set key=value ...]; jobs: $jobs" >&2; }

job="${1:-}"
if [ -z "$job" ] || [ "$job" = "-h" ] || [ "$job" = "--help" ]; then usage; exit 2; fi
case " $jobs " in *" $job "*) ;; *) echo "error: unknown job '$job'" >&2; usage; exit 2 ;; esac
shift

"$root/scripts/bootstrap.sh"

# The lib package travels to the executors as a zip (the same on a cluster).
mkdir -p "$root/build"
( cd "$root" && rm -f build/lib.zip && "$root/.venv/bin/python" -m zipfile -c build/lib.zip lib >/dev/null )
jars=$(ls "$root"/build/jars/*.jar | paste -sd, -)

export TWOTOWER_HOME="$root"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$root/.venv/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$root/.venv/bin/python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::FutureWarning,ignore::DeprecationWarning}"

# shellcheck disable=SC2086
exec "$root/.venv/bin/spark-submit" \
  --jars "$jars" \
  --py-files "$root/build/lib.zip" \
  --driver-memory "${SPARK_DRIVER_MEMORY:-4g}" \
  --driver-java-options "-Dlog4j2.configurationFile=file:$root/conf/log4j2.properties" \
  --conf spark.log.structuredLogging.enabled=false \
  ${SPARK_SUBMIT_ARGS:-} \
  "$root/jobs/$job.py" "$@"
