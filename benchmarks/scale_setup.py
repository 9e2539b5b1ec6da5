"""What the scale benchmarks share: the command line, the config of a synthetic lake, and the
peak memory of this Python driver process."""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def parse_args(doc: str, default_n: int, full_n: int, more=None) -> argparse.Namespace:
    """The shared options; ``more(parser)`` adds a benchmark's own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the issue's size")
    p.add_argument("--profiles", type=int, help=f"profiles to generate (default {default_n:,}; --full {full_n:,})")
    p.add_argument("--lake", help="lake folder (default: a temporary folder, removed after)")
    p.add_argument("--driver-memory", default="6g", help="JVM memory of local Spark (not the Python driver)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, as for the jobs (repeatable)")
    if more:
        more(p)
    args = p.parse_args()
    args.n = args.profiles or (full_n if args.full else default_n)
    return args


def synthetic_lake_config(args: argparse.Namespace, prefix: str):
    """(Config for a lake of ``args.n`` synthetic profiles, the lake folder)."""
    from lib.cli import setup_logging
    setup_logging()
    lake_dir = args.lake or tempfile.mkdtemp(prefix=prefix)
    return lake_config(args, lake_dir, args.n), lake_dir


def lake_config(args: argparse.Namespace, path: str, n: int, defaults: tuple = (), fixed: tuple = ()):
    """Config of a synthetic lake of ``n`` profiles at ``path``: the benchmark's ``defaults``,
    then the user's --set, then what the figures are defined at (``fixed``)."""
    from lib.config import load_config
    return load_config(os.path.join(ROOT, "conf", "local.yaml"), [
        f"lake.path={path}", f"source.num_profiles={n}",
        f"source.archetypes_file={os.path.join(ROOT, 'conf', 'archetypes.yaml')}",
        f"spark.conf.spark.driver.memory={args.driver_memory}",
        "spark.conf.spark.sql.shuffle.partitions=16", *defaults, *args.overrides, *fixed])
