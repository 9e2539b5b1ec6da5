"""train: training pairs from the lake, Petastorm into Horovod (on the Spark executors, or
under horovodrun), one model version with both towers and the preprocessor."""
from __future__ import annotations

import hashlib
import math
import json
import os
import shutil
import subprocess
import sys
import warnings

from lib import lake
from lib.config import Config
from lib.errors import UserError
from lib.features.job import preprocessor_path
from lib.tracking import log_training
from lib.train.worker import MIN_STEPS_PER_EPOCH, per_rank_batch, steps_per_epoch, train_worker

ROWS_PER_FILE = 50000  # Petastorm shards by row group: enough files that every rank gets some
FAULT_ENV = "TWOTOWER_TRAIN_FAULT"  # "rank,epoch,step": that rank SIGKILLs itself there (tests)


def training_pairs(spark, cfg: Config, features_run: str, hard=None):
    """(u_dense, u_ids, p_dense, p_ids, pkey, plogq): features of user and positive profile for
    each training positive, and log of the profile's share of all positives (for logQ).
    With ``hard`` (``hard_negative_lists``) also one mined negative per pair:
    (h_dense, h_ids, hkey, hlogq, hvalid), hvalid 0 and zeros where the user has none."""
    from pyspark.sql import functions as F
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    feats = lake.read_table(spark, cfg.lake.path, "features", "features").where(F.col("run_id") == features_run)
    pos = inter.where((F.col("label") == 1) & (F.col("split") == "train")).select("user_id", "profile_id")
    u = feats.select(F.col("id").alias("user_id"), F.col("dense").alias("u_dense"), F.col("ids").alias("u_ids"))
    p = feats.select(F.col("id").alias("profile_id"), F.col("dense").alias("p_dense"), F.col("ids").alias("p_ids"))
    total = pos.count()
    share = pos.groupBy("profile_id").count().select(
        "profile_id", F.log(F.col("count") / F.lit(total)).cast("float").alias("plogq"))
    pairs = pos.join(u, "user_id").join(p, "profile_id").join(share, "profile_id")
    columns = ["u_dense", "u_ids", "p_dense", "p_ids", F.xxhash64(F.col("profile_id")).alias("pkey"), "plogq"]
    if hard is not None:
        seed = cfg.train.seed
        pick = F.element_at("hard", (F.pmod(F.xxhash64(F.lit(seed), F.lit("hard"), "user_id", "profile_id"),
                                            F.greatest(F.size("hard"), F.lit(1))) + 1).cast("int"))
        h = feats.select(F.col("id").alias("hard_id"), F.col("dense").alias("hd"), F.col("ids").alias("hi"))
        hshare = share.select(F.col("profile_id").alias("hard_id"), F.col("plogq").alias("hq"))
        pairs = (pairs.join(hard, "user_id", "left")
                 .withColumn("hard_id", F.when(F.size("hard") > 0, pick))
                 .join(h, "hard_id", "left").join(hshare, "hard_id", "left"))
        valid = F.col("hd").isNotNull()
        dims = F.size("p_dense"), F.size("p_ids")
        columns += [F.when(valid, F.col("hd")).otherwise(F.array_repeat(F.lit(0.0).cast("float"), dims[0])).alias("h_dense"),
                    F.when(valid, F.col("hi")).otherwise(F.array_repeat(F.lit(0), dims[1])).alias("h_ids"),
                    F.when(valid, F.xxhash64("hard_id")).otherwise(F.lit(0).cast("long")).alias("hkey"),
                    # Never a positive in training: its share of the positives is below 1/total.
                    F.coalesce("hq", F.lit(math.log(1.0 / max(total, 1)))).cast("float").alias("hlogq"),
                    valid.cast("int").alias("hvalid")]
    # A fixed shuffled order: same seed, same data order.
    return (pairs.orderBy(F.xxhash64(F.lit(cfg.train.seed), F.col("user_id"), F.col("profile_id")))
            .select(*columns))


def hard_negative_lists(spark, cfg: Config):
    """(user_id, hard: array<string>): the previous model's top ``train.hard_negative_top``
    matches of each user that are none of its positives (any split, any source), best
    first; None when no model has published matches yet (first training)."""
    from pyspark.sql import functions as F
    if not lake.table_exists(spark, cfg.lake.path, "matches"):
        return None
    # The visible matches are the last published match run's (one commit replaces them), so
    # they come from the model that published them, not from the newest training, which
    # may not have published any.
    matches = lake.read_table(spark, cfg.lake.path, "matches").where(F.col("rank") <= cfg.train.hard_negative_top)
    if matches.limit(1).count() == 0:
        return None
    positives = (lake.read_table(spark, cfg.lake.path, "interactions").where(F.col("label") == 1)
                 .select("user_id", "profile_id"))
    return (matches.join(positives, ["user_id", "profile_id"], "left_anti")
            .groupBy("user_id").agg(F.transform(F.array_sort(F.collect_list(F.struct("rank", "profile_id"))),
                                                lambda x: x["profile_id"]).alias("hard")))


def checkpoint_dir(spark, cfg: Config, features_run: str) -> str:
    """Where this training writes its per-epoch checkpoints: keyed by what it trains on (the
    features run, the version of the interactions table) and how (the train settings but
    the number of epochs), so a rerun after a failure finds them and resumes, and anything
    else starts afresh."""
    from delta.tables import DeltaTable
    version = DeltaTable.forPath(spark, lake.table_path(cfg.lake.path, "interactions")).history(1).first()["version"]
    settings = {k: v for k, v in vars(cfg.train).items() if k not in ("epochs", "resume", "hosts")}
    key = hashlib.sha256(json.dumps([features_run, version, settings], sort_keys=True, default=str).encode())
    return os.path.join(os.path.abspath(cfg.lake.path), "_checkpoints", "train", key.hexdigest()[:16])


def fault_from_env() -> dict:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return {}
    rank, epoch, step = (int(x) for x in spec.split(","))
    return {"rank": rank, "epoch": epoch, "step": step}


def pairs_converter(spark, cfg: Config, pairs, rows: int):
    """The training pairs materialised as Parquet under the lake (``_petastorm/``) for
    Petastorm: a SparkDatasetConverter (``delete()`` it when done). Enough files that every
    rank's shard has some."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter
    cache = os.path.join(os.path.abspath(cfg.lake.path), "_petastorm")
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, "file://" + cache)
    n_files = max(cfg.train.num_proc * 2, -(-rows // ROWS_PER_FILE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return make_spark_converter(pairs.repartition(n_files), parquet_row_group_size_bytes=8 << 20)


def run(spark, cfg: Config, run_id: str) -> dict:
    from lib.features.preprocessor import Preprocessor
    tc = cfg.train
    features_run = lake.latest_run(spark, cfg.lake.path, "features")["run_id"]
    pre_path = preprocessor_path(cfg.lake.path, features_run)
    pre = Preprocessor.load(pre_path)
    hard = hard_negative_lists(spark, cfg) if tc.hard_negatives else None
    if tc.hard_negatives and hard is None:
        print("[train] train.hard_negatives: no earlier model has published matches yet; "
              "training without hard negatives this time", flush=True)
    pairs = training_pairs(spark, cfg, features_run, hard)
    rows = pairs.count()
    if rows < tc.num_proc:
        raise UserError(f"only {rows} training pairs, fewer than train.num_proc={tc.num_proc} ranks; "
                        "lower train.num_proc or add data")
    batch = per_rank_batch(rows, tc.batch_size, tc.num_proc)
    if batch < tc.batch_size:
        print(f"[train] {rows:,} training pairs: {batch} per rank and step (train.batch_size={tc.batch_size} "
              f"would give fewer than {MIN_STEPS_PER_EPOCH} steps an epoch)", flush=True)
    slots = spark.sparkContext.defaultParallelism
    if tc.launcher == "spark" and tc.num_proc > slots:
        raise UserError(f"train.num_proc={tc.num_proc} but Spark has only {slots} task slots; "
                        f"lower train.num_proc or give the job more executor cores")
    model_version = run_id
    final_dir = lake.artifact_dir(cfg.lake.path, "models", model_version)
    tmp_dir = final_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    ckpt_dir = checkpoint_dir(spark, cfg, features_run)
    if not tc.resume:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    os.makedirs(ckpt_dir, exist_ok=True)
    converter = pairs_converter(spark, cfg, pairs, rows)
    params = {"dense_dim": pre.dense_dim, "bag_layout": pre.bag_layout(), "bag_dim": tc.bag_dim,
              "hidden_units": tc.hidden_units, "embedding_dim": tc.embedding_dim,
              "temperature": tc.temperature, "epochs": tc.epochs, "batch_size": batch,
              "learning_rate": tc.learning_rate, "seed": tc.seed, "out_dir": tmp_dir,
              "dropout": tc.dropout, "loss": tc.loss, "logq_correction": tc.logq_correction, "margin": tc.margin,
              "lr_scaling": tc.lr_scaling, "hard_negatives": hard is not None, "checkpoint_dir": ckpt_dir, "fault": fault_from_env(),
              "steps_per_epoch": steps_per_epoch(rows, batch, tc.num_proc)}
    try:
        if tc.launcher == "horovodrun":
            plan = os.path.join(lake.staging_dir(cfg.lake.path, run_id), "train_plan.json")
            try:
                run_horovodrun(converter, params, tc.num_proc, tc.hosts or f"localhost:{tc.num_proc}", plan)
            finally:  # it names Petastorm files deleted below: no use after this run
                if os.path.exists(plan):
                    os.remove(plan)
        else:
            run_on_spark(converter, params, tc.num_proc)
    except Exception as e:
        raise UserError(f"training failed ({type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}); "
                        f"the checkpoints in {ckpt_dir} are kept: run 'train' again with the same settings "
                        "to resume from the last finished epoch") from e
    finally:
        converter.delete()
    shutil.copy(pre_path, os.path.join(tmp_dir, "preprocessor.json"))
    lake.write_json_atomic(os.path.join(tmp_dir, "version.json"),
                           {"model_version": model_version, "features_run_id": features_run})
    lake.publish_dir(tmp_dir, final_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: a rerun trains afresh
    meta = lake.read_json(os.path.join(final_dir, "model.json"))
    mlflow_run = log_training(cfg, final_dir, meta, {"model_version": model_version, "run_id": run_id,
                                                     "features_run_id": features_run})
    losses = meta["loss_history"]
    return {"model_version": model_version, "training_pairs": rows, "ranks": meta["num_proc"],
            "launcher": tc.launcher, "hard_negatives": hard is not None, "resumed_from_epoch": meta["resumed_from_epoch"],
            "first_loss": round(losses[0], 4), "final_loss": round(losses[-1], 4), "model_dir": final_dir,
            "mlflow_run_id": mlflow_run}


def _worker_env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
            "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}


def run_on_spark(converter, params: dict, num_proc: int) -> None:
    """The normal path: one Horovod process per Spark task on the cluster's executors."""
    import horovod.spark
    horovod.spark.run(train_worker, args=(converter, params), num_proc=num_proc, use_gloo=True, verbose=0,
                      env=_worker_env())


def run_horovodrun(converter, params: dict, num_proc: int, hosts: str, plan_path: str,
                   timeout_s: float | None = None) -> None:
    """Training outside Spark (a GPU box): the pairs are already materialised as Parquet by
    the converter; ``horovodrun`` starts ``python -m lib.train.horovodrun PLAN`` on ``hosts``,
    which read them with Petastorm. The same command can be run by hand with the plan."""
    lake.write_json_atomic(plan_path, {"params": params, "converter": {
        "cache_dir_url": converter.cache_dir_url, "file_urls": converter.file_urls,
        "dataset_size": len(converter)}})
    home = os.environ.get("TWOTOWER_HOME") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    cmd = [horovodrun, "-np", str(num_proc), "-H", hosts, "--gloo", sys.executable, "-m", "lib.train.horovodrun", plan_path]
    print("[train] " + " ".join(cmd), flush=True)
    env = {**_worker_env(), "PYTHONPATH": home + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rc = subprocess.run(cmd, cwd=home, env=env, timeout=timeout_s).returncode
    if rc != 0:
        raise RuntimeError(f"horovodrun exited with status {rc}")
