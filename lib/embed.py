"""embed: every profile through the profile tower and every active user through the user tower.

Inference runs on the executors: each Python worker loads the towers once (cached per
process) and embeds its partition in batches; nothing is collected on the driver.
"""
from __future__ import annotations

import os

from lib import lake
from lib.config import Config
from lib.eligibility import active_profiles

EMB_DDL = "id string, embedding array<float>"
BATCH = 4096
_TOWERS: dict = {}  # (model_dir, which) -> Keras tower, one load per Python worker


def _tower(model_dir: str, which: str):
    key = (model_dir, which)
    if key not in _TOWERS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        # Spark runs one task per core: one TF thread per task, never more threads than cores.
        threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised in this process
        from lib.train.towers import load_tower
        _TOWERS[key] = load_tower(model_dir, which)
    return _TOWERS[key]


def embed(features, model_dir: str, which: str):
    """DataFrame (id, dense, ids) -> (id, embedding) through the ``which`` tower ('user' or 'profile')."""
    import numpy as np
    import pandas as pd

    def apply(batches):
        tower = _tower(model_dir, which)
        for pdf in batches:
            if len(pdf) == 0:
                continue
            x = np.stack(pdf["dense"].values).astype(np.float32)
            ids = np.stack(pdf["ids"].values).astype(np.int32)
            out = np.concatenate([tower([x[i:i + BATCH], ids[i:i + BATCH]], training=False).numpy()
                                  for i in range(0, len(x), BATCH)])
            yield pd.DataFrame({"id": pdf["id"].values, "embedding": list(out)})

    return features.mapInPandas(apply, EMB_DDL)


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    model_dir = lake.artifact_dir(cfg.lake.path, "models", mv)
    features_run = lake.read_json(os.path.join(model_dir, "version.json"))["features_run_id"]
    feats = lake.read_table(spark, cfg.lake.path, "features", "features").where(F.col("run_id") == features_run)
    active = active_profiles(lake.read_table(spark, cfg.lake.path, "profiles", "ingest")).select("id")
    feats = feats.join(active, "id", "left_semi").select("id", "dense", "ids")
    out = {}
    for which, table, key in (("user", "user_embeddings", "user_id"), ("profile", "profile_embeddings", "profile_id")):
        emb = (embed(feats, model_dir, which).withColumnRenamed("id", key)
               .withColumn("model_version", F.lit(mv)).withColumn("run_id", F.lit(run_id)))
        lake.replace_slice(spark, emb, cfg.lake.path, table, "model_version", mv)
        out[table] = lake.read_table(spark, cfg.lake.path, table).where(F.col("model_version") == mv).count()
    return {"model_version": mv, **out}
