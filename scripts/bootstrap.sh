#!/usr/bin/env bash
# One idempotent set-up shared by ./spark-submit.sh and ./run-tests.sh.
#
# - Python environment: a venv under the cache, keyed by a hash of requirements.txt and
#   this script, linked at ./.venv. A second run with nothing changed installs nothing.
# - Horovod 0.28.1 built from source against the installed TensorFlow (Gloo, CPU ops).
# - JVM jars (Delta Lake) resolved by Maven from pom.xml into build/jars.
#
# Environment: TWOTOWER_CACHE (default ~/.cache/twotower), PYTHON (default python3.11).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TWOTOWER_CACHE:-$HOME/.cache/twotower}"
python="${PYTHON:-python3.11}"
log() { echo "[bootstrap] $*" >&2; }

# System packages: Java 17 for Spark 4, Maven for the jars (installed when missing and we may).
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "error: ${missing[*]} not found; install Java 17 and Maven" >&2; exit 2
  fi
fi
command -v "$python" >/dev/null || { echo "error: $python not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2; exit 2; }

# --- Python environment -------------------------------------------------------------
# The cache key: the pinned requirements and how Horovod is built. Change HOROVOD_RECIPE
# when the build below changes, so that caches are rebuilt.
HOROVOD_RECIPE="horovod==0.28.1 tensorflow gloo cpu-ops:gloo no-mpi"
key=$( (cat "$root/requirements.txt"; echo "$HOROVOD_RECIPE") | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  log "building Python environment $venv (first run only: about 4 minutes in all)"
  mkdir -p "$cache"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade "pip<25"
  "$venv/bin/pip" install --quiet -r "$root/requirements.txt"
  # Horovod: built against the TensorFlow just installed (hence no build isolation),
  # Gloo only. The cmake wheel from PyPI (4.x) breaks Horovod's bundled gloo, so the
  # policy floor is set in case one is on PATH.
  log "building horovod 0.28.1 from source"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO \
  CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS="-j$(nproc)" \
    "$venv/bin/pip" install --quiet --no-cache-dir --no-build-isolation horovod==0.28.1
  TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -c "import horovod.tensorflow as hvd, petastorm, faiss, pyspark, delta, deltalake" \
    || { echo "error: the Python environment at $venv does not import; see the pip output above" >&2; exit 1; }
  touch "$venv/.complete"
  # Older environments of this project are not needed any more.
  find "$cache" -maxdepth 1 -name 'venv-*' ! -name "venv-$key" -exec rm -rf {} + 2>/dev/null || true
fi
if [ "$(readlink "$root/.venv" 2>/dev/null)" != "$venv" ]; then
  rm -rf "$root/.venv"
  ln -s "$venv" "$root/.venv"
fi

# --- JVM jars -----------------------------------------------------------------------
jkey=$(sha256sum "$root/pom.xml" | cut -c1-16)
jars="$root/build/jars"
if [ ! -f "$jars/.complete-$jkey" ]; then
  command -v mvn >/dev/null || { echo "error: mvn not found; install Maven (apt-get install maven)" >&2; exit 2; }
  log "resolving JVM jars with Maven into build/jars"
  rm -rf "$jars"; mkdir -p "$jars"
  # Maven's output only matters when it fails (on success it prints bare colour codes).
  mvnlog="$root/build/maven.log"
  (cd "$root" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$jars") > "$mvnlog" 2>&1 \
    || { cat "$mvnlog" >&2; echo "error: Maven could not resolve the jars in pom.xml (is Maven Central reachable?)" >&2; exit 1; }
  touch "$jars/.complete-$jkey"
fi
