"""features: fit the preprocessor on the current profiles, save it with its report, and
write the features table (dense vector, embedding-bag ids, coordinates) for every profile."""
from __future__ import annotations

import datetime as dt
import logging
import os

from lib import lake
from lib.config import Config
from lib.errors import UserError
from lib.features.fit import feature_inputs, fit_preprocessor
from lib.features.preprocessor import Preprocessor
from lib.schema import MUSIC_DDL

# latitude/longitude are not model inputs: they ride along for distance filters and reranking.
log = logging.getLogger(__name__)
FEATURES_DDL = "id string, dense array<float>, ids array<int>, latitude double, longitude double"


def preprocessor_path(lake_path: str, version: str) -> str:
    return os.path.join(lake.artifact_dir(lake_path, "preprocessors", version), "preprocessor.json")


def report_path(lake_path: str, version: str) -> str:
    return os.path.join(lake.artifact_dir(lake_path, "preprocessors", version), "report.json")


def transform(inputs, pre: Preprocessor, as_of: dt.datetime):
    """DataFrame of ``FEATURES_DDL`` computed on the executors with the plain-Python transform."""
    import pandas as pd

    def apply(batches):
        for pdf in batches:
            parsed, dense, ids = pre.transform(pdf, as_of)
            yield pd.DataFrame({"id": pdf["id"].values, "dense": list(dense), "ids": list(ids),
                                "latitude": [p.latitude for p in parsed], "longitude": [p.longitude for p in parsed]})

    return inputs.mapInPandas(apply, FEATURES_DDL)


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    music = lake.read_table_or_empty(spark, cfg.lake.path, "music_preferences", MUSIC_DDL)
    inputs = feature_inputs(profiles, music)
    as_of = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    pre, report = fit_preprocessor(inputs, run_id, as_of, cfg.features)
    if report["profiles"] == 0:
        raise UserError(f"the lake {cfg.lake.path} has no profiles to fit the features on; run ingest first")
    feats = transform(inputs, pre, as_of).withColumn("run_id", F.lit(run_id))
    if lake.table_exists(spark, cfg.lake.path, "features") and \
            lake.read_table(spark, cfg.lake.path, "features").columns != feats.columns:
        # Rows of an older feature format: no model of this code can read them; start over.
        log.warning("features table has an older layout; replacing it (earlier feature runs are dropped)")
        lake.write_table(feats, cfg.lake.path, "features", partition_by=["run_id"])
    else:
        lake.replace_slice(spark, feats, cfg.lake.path, "features", "run_id", run_id)
    # The artifact last: a preprocessor on disk always has its features rows.
    lake.write_json_atomic(report_path(cfg.lake.path, run_id), report)
    pre.save(preprocessor_path(cfg.lake.path, run_id))
    n = lake.read_table(spark, cfg.lake.path, "features").where(F.col("run_id") == run_id).count()
    weak = sorted(f for f, r in report["features"].items() if r["coverage"] == 0.0)
    return {"profiles": n, "dense_dim": pre.dense_dim, "id_slots": pre.id_slots,
            "preprocessor": preprocessor_path(cfg.lake.path, run_id), "report": report_path(cfg.lake.path, run_id),
            "bags": {f: len(b["vocab"]) for f, b in pre.bags.items()},
            "multi_hot": {f: len(v) for f, v in pre.multi_hot.items()},
            "clipped": report["clipped"], "fields_without_values": len(weak)}
