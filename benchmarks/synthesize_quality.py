"""Synthetic labels: how far the oracle (the generator's own ranking) recovers them, and what synthesize costs.

Runs `ingest` (synthetic source) and `synthesize` into a fresh lake as the jobs do, then the
oracle baseline of `evaluate` on the held-out positives (no model needed): the top K by the
compatibility score without its noise, under the same filters as the model's matches.
The oracle's recall@K says how much of the held-out set any model could recover, and moves
with `synthesize.noise` (the default aims at 0.3..0.8 at 5,000 profiles).

    .venv/bin/python benchmarks/synthesize_quality.py                    # 5,000 profiles
    .venv/bin/python benchmarks/synthesize_quality.py --full             # 100,000 profiles
    .venv/bin/python benchmarks/synthesize_quality.py --set synthesize.noise=0.5

Last line: JSON with profiles, ingest_s, synthesize_s, the oracle's metrics and the noise.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_setup import parse_args, peak_rss_mb, synthetic_lake_config  # noqa: E402


def main() -> None:
    args = parse_args(__doc__, 5_000, 100_000)
    cfg, lake_dir = synthetic_lake_config(args, "synthesize-quality-")
    from pyspark.sql import functions as F

    from lib import lake
    from lib.cli import run_stages
    from lib.config import gender_filter_on
    from lib.eligibility import active_profiles
    from lib.evaluate import oracle_metrics
    from lib.session import build_spark
    try:
        spark = build_spark(cfg)
        run_id = lake.new_run_id()
        results = run_stages(spark, cfg, ["ingest", "synthesize"], run_id)
        started = time.time()
        active = active_profiles(lake.read_table(spark, lake_dir, "profiles")).select(F.col("id").alias("user_id"))
        heldout = (lake.read_table(spark, lake_dir, "interactions")
                   .where((F.col("split") == "heldout") & (F.col("label") == 1))
                   .select("user_id", "profile_id").join(active, "user_id", "left_semi").cache())
        oracle = oracle_metrics(spark, cfg, run_id, heldout, cfg.match.k, gender_filter_on(cfg.source))
        oracle_s = time.time() - started
        spark.stop()
    finally:
        if not args.lake:
            shutil.rmtree(lake_dir, ignore_errors=True)
    k = cfg.match.k
    print(json.dumps({
        "profiles": args.n, "noise": cfg.synthesize.noise, "retrieve": cfg.synthesize.retrieve, "k": k,
        "ingest_s": results["ingest"]["seconds"], "synthesize_s": results["synthesize"]["seconds"],
        "oracle_s": round(oracle_s, 1), **{f"oracle_{m}@{k}": round(v, 4) for m, v in oracle.items()},
        "synthesize": {key: v for key, v in results["synthesize"].items() if key != "seconds"},
        "driver_peak_rss_mb": round(peak_rss_mb(), 1),
    }))


if __name__ == "__main__":
    main()
