"""Features at scale: fit the preprocessor and transform every profile of a synthetic lake.

Ingests N synthetic profiles (not timed), then runs the `features` stage exactly as the job
does on local Spark: parse on the executors, fit (only capped vocabularies and moments reach
the driver), transform, write the features table. Measures its wall time and the peak memory
of this Python driver process (where a collect() would land). The reference beside it: the
same parse + encode in this one Python process on a slice, to show what the executors add.

    .venv/bin/python benchmarks/features_scale.py            # 50,000 profiles
    .venv/bin/python benchmarks/features_scale.py --full     # 1,000,000 profiles (goal: < 10 min, < 2 GB)

The generator makes about 1% of accounts deleted or banned and the ingest erases them, so
--full generates 1,010,000 to leave 1,000,000 profiles in the lake.

Last line: JSON with profiles, wall_s, driver_peak_rss_mb and the other figures.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_setup import parse_args, peak_rss_mb, synthetic_lake_config  # noqa: E402


def reference_rows_per_s(rows: list, pre) -> float:
    """Profiles per second of parse + encode in this one Python process (no Spark)."""
    as_of = dt.datetime.now()
    started = time.time()
    pre.transform(rows, as_of)
    return len(rows) / (time.time() - started)


def main() -> None:
    args = parse_args(__doc__, 50_000, 1_010_000)
    cfg, lake_dir = synthetic_lake_config(args, "features-scale-")
    from lib import lake
    from lib.features.fit import feature_inputs
    from lib.features.preprocessor import Preprocessor
    from lib.session import build_spark
    from lib.cli import run_stages
    try:
        spark = build_spark(cfg)
        ingest_started = time.time()
        if not lake.table_exists(spark, lake_dir, "profiles"):
            run_stages(spark, cfg, ["ingest"], lake.new_run_id())
        ingest_s = time.time() - ingest_started
        started = time.time()
        results = run_stages(spark, cfg, ["features"], lake.new_run_id())
        wall = time.time() - started
        stage_peak_rss = peak_rss_mb()  # before the reference's sample comes to the driver
        feats = results["features"]
        pre = Preprocessor.load(feats["preprocessor"])
        sample = feature_inputs(lake.read_table(spark, lake_dir, "profiles"),
                                lake.read_table(spark, lake_dir, "music_preferences")).limit(20_000).toPandas()
        spark.stop()
    finally:
        if not args.lake:
            shutil.rmtree(lake_dir, ignore_errors=True)
    ref = reference_rows_per_s(sample.to_dict("records"), pre)
    rate = feats["profiles"] / feats["seconds"]
    print(json.dumps({
        "profiles": feats["profiles"], "wall_s": round(wall, 1), "driver_peak_rss_mb": round(stage_peak_rss, 1),
        "ingest_setup_s": round(ingest_s, 1), "dense_dim": feats["dense_dim"], "id_slots": feats["id_slots"],
        "features_profiles_per_s": round(rate, 1),
        "reference_single_process_profiles_per_s": round(ref, 1),
        "ratio_features_stage_vs_single_process_transform": round(rate / ref, 3),
        "note": "the stage parses every profile twice (fit, then transform) and writes Delta; "
                "the reference parses and encodes once, in memory",
    }))


if __name__ == "__main__":
    main()
