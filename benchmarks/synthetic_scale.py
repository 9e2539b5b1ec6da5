"""Synthetic data at scale: profiles, music preferences and interactions into a fresh lake.

Runs the `ingest` (synthetic source) and `synthesize` stages exactly as the jobs do, on
local Spark, and measures wall time and the peak memory of this Python driver process
(where a collect() would land). The reference beside it: the plain single-process Python
generator on a slice, to show what the executors add.

    .venv/bin/python benchmarks/synthetic_scale.py            # 50,000 profiles
    .venv/bin/python benchmarks/synthetic_scale.py --full     # 1,000,000 profiles (goal: < 10 min, < 2 GB)

Last line: JSON with profiles, wall_s, driver_peak_rss_mb and the other figures.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_setup import parse_args, peak_rss_mb, synthetic_lake_config  # noqa: E402


def reference_rows_per_s(n: int, seed: int, archetypes: str) -> float:
    """Profiles per second of the generator in this one Python process (no Spark)."""
    from lib.sources.synthetic import generate_profile, load_archetypes
    spec = load_archetypes(archetypes)
    started = time.time()
    for i in range(n):
        generate_profile(i, seed, spec)
    return n / (time.time() - started)


def main() -> None:
    args = parse_args(__doc__, 50_000, 1_000_000)
    n = args.n
    cfg, lake_dir = synthetic_lake_config(args, "synthetic-scale-")
    from lib import lake
    from lib.cli import run_stages
    from lib.session import build_spark
    started = time.time()
    try:
        spark = build_spark(cfg)
        results = run_stages(spark, cfg, ["ingest", "synthesize"], lake.new_run_id())
        wall = time.time() - started
        counts = {t: lake.read_table(spark, lake_dir, t).count()
                  for t in ("profiles", "music_preferences", "interactions")}
        spark.stop()
    finally:
        if not args.lake:
            shutil.rmtree(lake_dir, ignore_errors=True)
    ref_n = 20_000
    ref = reference_rows_per_s(ref_n, cfg.source.seed, cfg.source.archetypes_file)
    spark_rate = n / results["ingest"]["seconds"]
    print(json.dumps({
        "profiles": n, "wall_s": round(wall, 1), "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        "ingest_s": results["ingest"]["seconds"], "synthesize_s": results["synthesize"]["seconds"],
        "profiles_in_lake": counts["profiles"], "music_preferences": counts["music_preferences"],
        "interactions": counts["interactions"],
        "interactions_per_user": round(counts["interactions"] / max(1, results["synthesize"]["users_with_interactions"]), 2),
        "reference_single_process_profiles_per_s": round(ref, 1),
        "ingest_profiles_per_s": round(spark_rate, 1),
        "ratio_ingest_vs_single_process_generator": round(spark_rate / ref, 3),
    }))


if __name__ == "__main__":
    main()
