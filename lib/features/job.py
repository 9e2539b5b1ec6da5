"""features: fit the preprocessor on the current profiles and write the features table."""
from __future__ import annotations

import os

from lib import lake
from lib.config import Config
from lib.features.fit import feature_inputs, fit_preprocessor
from lib.features.preprocessor import Preprocessor
from lib.schema import MUSIC_DDL

FEATURES_DDL = "id string, features array<float>"


def preprocessor_path(lake_path: str, version: str) -> str:
    return os.path.join(lake.artifact_dir(lake_path, "preprocessors", version), "preprocessor.json")


def transform(inputs, pre: Preprocessor):
    """DataFrame (id, features) computed on the executors with the plain-Python transform."""
    import pandas as pd

    def apply(batches):
        for pdf in batches:
            x = pre.transform(pdf)
            yield pd.DataFrame({"id": pdf["id"].values, "features": list(x)})

    return inputs.mapInPandas(apply, FEATURES_DDL)


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    music = lake.read_table_or_empty(spark, cfg.lake.path, "music_preferences", MUSIC_DDL)
    inputs = feature_inputs(profiles, music)
    pre = fit_preprocessor(inputs, run_id, cfg.features.max_categories, cfg.features.max_multi_hot)
    pre.save(preprocessor_path(cfg.lake.path, run_id))
    feats = transform(inputs, pre).withColumn("run_id", F.lit(run_id))
    lake.replace_slice(spark, feats, cfg.lake.path, "features", "run_id", run_id)
    n = lake.read_table(spark, cfg.lake.path, "features").where(F.col("run_id") == run_id).count()
    return {"profiles": n, "dim": pre.dim, "preprocessor": preprocessor_path(cfg.lake.path, run_id),
            "vocab_sizes": {**{k: len(v) for k, v in pre.categorical.items()},
                            **{f"attr:{k}": len(v) for k, v in pre.attributes.items()},
                            **{k: len(v) for k, v in pre.multi_hot.items()}}}
