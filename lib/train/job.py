"""train: training pairs from the lake, Petastorm into Horovod on the executors, one model version."""
from __future__ import annotations

import os
import shutil
import warnings

from lib import lake
from lib.config import Config
from lib.errors import UserError
from lib.features.job import preprocessor_path
from lib.train.worker import steps_per_epoch, train_worker

ROWS_PER_FILE = 50000  # Petastorm shards by row group: enough files that every rank gets some


def training_pairs(spark, cfg: Config, features_run: str):
    """(u_dense, u_ids, p_dense, p_ids, pkey): features of user and positive profile for each
    training positive."""
    from pyspark.sql import functions as F
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    feats = lake.read_table(spark, cfg.lake.path, "features", "features").where(F.col("run_id") == features_run)
    pos = inter.where((F.col("label") == 1) & (F.col("split") == "train")).select("user_id", "profile_id")
    u = feats.select(F.col("id").alias("user_id"), F.col("dense").alias("u_dense"), F.col("ids").alias("u_ids"))
    p = feats.select(F.col("id").alias("profile_id"), F.col("dense").alias("p_dense"), F.col("ids").alias("p_ids"))
    return (pos.join(u, "user_id").join(p, "profile_id")
            # A fixed shuffled order: same seed, same data order.
            .orderBy(F.xxhash64(F.lit(cfg.train.seed), F.col("user_id"), F.col("profile_id")))
            .select("u_dense", "u_ids", "p_dense", "p_ids", F.xxhash64(F.col("profile_id")).alias("pkey")))


def run(spark, cfg: Config, run_id: str) -> dict:
    import horovod.spark
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    tc = cfg.train
    features_run = lake.latest_run(spark, cfg.lake.path, "features")["run_id"]
    pre_path = preprocessor_path(cfg.lake.path, features_run)
    from lib.features.preprocessor import Preprocessor
    pre = Preprocessor.load(pre_path)
    pairs = training_pairs(spark, cfg, features_run)
    rows = pairs.count()
    if rows < tc.batch_size * tc.num_proc:
        raise UserError(f"only {rows} training pairs, fewer than one global batch "
                        f"(train.batch_size={tc.batch_size} x train.num_proc={tc.num_proc}); "
                        "lower train.batch_size or add data")
    slots = spark.sparkContext.defaultParallelism
    if tc.num_proc > slots:
        raise UserError(f"train.num_proc={tc.num_proc} but Spark has only {slots} task slots; "
                        f"lower train.num_proc or give the job more executor cores")
    model_version = run_id
    final_dir = lake.artifact_dir(cfg.lake.path, "models", model_version)
    tmp_dir = final_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    cache = os.path.join(os.path.abspath(cfg.lake.path), "_petastorm")
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, "file://" + cache)
    n_files = max(tc.num_proc * 2, -(-rows // ROWS_PER_FILE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        converter = make_spark_converter(pairs.repartition(n_files), parquet_row_group_size_bytes=8 << 20)
    params = {"dense_dim": pre.dense_dim, "bag_layout": pre.bag_layout(), "bag_dim": tc.bag_dim, "hidden_units": tc.hidden_units, "embedding_dim": tc.embedding_dim,
              "temperature": tc.temperature, "epochs": tc.epochs, "batch_size": tc.batch_size,
              "learning_rate": tc.learning_rate, "seed": tc.seed, "out_dir": tmp_dir,
              "steps_per_epoch": steps_per_epoch(rows, tc.batch_size, tc.num_proc)}
    try:
        results = horovod.spark.run(train_worker, args=(converter, params), num_proc=tc.num_proc,
                                    use_gloo=True, verbose=0,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
                                         "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"})
    finally:
        converter.delete()
    shutil.copy(pre_path, os.path.join(tmp_dir, "preprocessor.json"))
    lake.write_json_atomic(os.path.join(tmp_dir, "version.json"),
                           {"model_version": model_version, "features_run_id": features_run})
    lake.publish_dir(tmp_dir, final_dir)
    losses = results[0]["loss_history"]
    return {"model_version": model_version, "training_pairs": rows, "ranks": len(results),
            "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4), "model_dir": final_dir}
