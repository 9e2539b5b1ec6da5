"""The command line shared by every job: ``<job> [--conf FILE] [--set key=value ...]``.

Parses arguments and config, builds the Spark session, runs the stage(s) with timing,
records each success in the runs table, and turns a user's mistake into one line on
stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
import warnings

from lib.errors import CheckFailed, UserError

# The project folder (spark-submit.sh sets TWOTOWER_HOME; lib may run from a zip).
ROOT = os.environ.get("TWOTOWER_HOME") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("ingest", "synthesize", "features", "train", "embed", "index", "match", "evaluate")
# What `pipeline` runs: every stage, then the audit of the published matches (then
# `export` to the app's database when sink.url is set: see ``pipeline_stages``).
PIPELINE = STAGES + ("audit",)
# stage -> module with run(spark, cfg, run_id) -> dict
MODULES = {"ingest": "lib.ingest", "synthesize": "lib.synthesize", "features": "lib.features.job",
           "train": "lib.train.job", "embed": "lib.embed", "index": "lib.index", "match": "lib.match",
           "evaluate": "lib.evaluate", "audit": "lib.audit", "export": "lib.export"}
log = logging.getLogger("twotower")


def parse_args(job: str, argv: list):
    p = argparse.ArgumentParser(prog=f"spark-submit.sh {job}", description=f"Run the '{job}' job.")
    p.add_argument("--conf", default=os.path.join(ROOT, "conf", "local.yaml"), help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set lake.path=/tmp/lake (repeatable)")
    return p.parse_args(argv)


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # Our progress at INFO; libraries (py4j logs a harmless reset at exit on root) at WARNING.
    for ours in ("twotower", "lib"):
        logging.getLogger(ours).setLevel(logging.INFO)
    # Petastorm warns about float32 conversion and small files on every run: expected here.
    logging.getLogger("petastorm").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


def pipeline_stages(cfg) -> list:
    """The stages of ``pipeline``: all of them and the audit, then ``export`` when the app's
    database is configured (sink.url), so only audited matches reach the app."""
    return [*PIPELINE, "export"] if cfg.sink.url else list(PIPELINE)


def run_stages(spark, cfg, stages, run_id: str) -> dict:
    """Run ``stages`` in order under one run id; each success is recorded in the runs table."""
    from lib import lake
    results = {}
    for stage in stages:
        started = time.time()
        log.info("stage %s: started (run %s)", stage, run_id)
        try:
            info = importlib.import_module(MODULES[stage]).run(spark, cfg, run_id)
        except BaseException:
            cleanup_run(cfg.lake.path, run_id)
            raise
        tidy(cfg.lake.path)
        info["seconds"] = round(time.time() - started, 1)
        lake.record_run(spark, cfg.lake.path, stage, run_id, info.get("model_version", ""), info)
        log.info("stage %s: done in %.1fs %s", stage, info["seconds"], _short(info))
        results[stage] = info
    return results


def cleanup_run(lake_path: str, run_id: str) -> None:
    """Remove what a failed run left under temporary names (finished outputs are untouched)."""
    root = os.path.abspath(lake_path)
    for path in (os.path.join(root, "models", run_id + ".tmp"), os.path.join(root, "indexes", run_id + ".tmp"),
                 os.path.join(root, "_staging", run_id), os.path.join(root, "_petastorm")):
        shutil.rmtree(path, ignore_errors=True)
    tidy(lake_path)


def tidy(lake_path: str) -> None:
    """Remove the lake's working folders when they are empty."""
    for parent in ("_staging", "_petastorm", "models", "indexes"):
        try:
            os.rmdir(os.path.join(os.path.abspath(lake_path), parent))  # only if empty
        except OSError:
            pass


def _short(info: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items() if k != "seconds" and not isinstance(v, dict))


_INTERRUPTED = []  # non-empty once Ctrl-C (SIGINT) arrived


def _on_sigint(signum, frame):
    _INTERRUPTED.append(signum)
    # Every call into the stopping JVM now fails, and py4j logs each with a traceback.
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


def _interrupted_exit() -> int:
    print("interrupted: finished stages are kept, the stage that was running left nothing behind",
          file=sys.stderr)
    return 130


def _thread_failed(args) -> None:
    """A helper thread's failure (Horovod's Spark job thread when a rank dies or Ctrl-C stops
    Spark) as one line: the main thread reports what it means and what to do."""
    if _INTERRUPTED or args.exc_type is SystemExit:
        return
    first = (str(args.exc_value).strip().splitlines() or [""])[0][:200]
    log.warning("background thread %s stopped (%s: %s)", getattr(args.thread, "name", "?"),
                args.exc_type.__name__, first)


def main(stages: list, job: str | None = None, argv: list | None = None) -> int:
    job = job or stages[0]
    args = parse_args(job, sys.argv[1:] if argv is None else argv)
    setup_logging()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        threading.excepthook = _thread_failed
    started = time.time()
    try:
        from lib import lake
        from lib.config import load_config
        cfg = load_config(args.conf, args.overrides)
        _resolve_paths(cfg)
        lake.check_writable(cfg.lake.path)
        from lib.session import build_spark
        spark = build_spark(cfg)
        if threading.current_thread() is threading.main_thread():
            # PySpark's SparkContext put its own handler in (it cancels the jobs through the
            # JVM from inside the signal, which py4j reports as errors and tracebacks); ours
            # again: the JVM stops with this process, and the stage leaves nothing behind.
            signal.signal(signal.SIGINT, _on_sigint)
        run_id = cfg.run_id or lake.new_run_id()
        if job == "pipeline":
            stages = pipeline_stages(cfg)
        run_stages(spark, cfg, stages, run_id)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted_exit()
    except CheckFailed as e:
        print(f"check failed: {e}", file=sys.stderr)
        return 1
    except Exception:
        # Ctrl-C during a call into the JVM surfaces as a Py4J error, not KeyboardInterrupt.
        if _INTERRUPTED:
            return _interrupted_exit()
        raise
    log.info("%s finished in %.1fs (run %s, lake %s)", job, time.time() - started, run_id,
             os.path.abspath(cfg.lake.path))
    return 0


def _resolve_paths(cfg) -> None:
    """A relative archetypes file not found from here is looked up in the project."""
    p = cfg.source.archetypes_file
    if p and not os.path.isabs(p) and not os.path.exists(p) and os.path.exists(os.path.join(ROOT, p)):
        cfg.source.archetypes_file = os.path.join(ROOT, p)
