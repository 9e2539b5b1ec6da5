"""Training throughput with 1 and 2 Horovod workers, the Petastorm input alone, and quality.

Builds a synthetic lake (ingest, synthesize, features: not the figures), then:
1. `train` with train.num_proc=1 and with 2 (horovod.spark.run on local Spark, Petastorm
   shards, the job's own code), each for --epochs-throughput epochs: examples per second
   (all ranks together) averaged over the epochs after the first (the first traces the
   tf.function);
2. the input pipeline alone: the same Petastorm reader a rank uses (make_tf_dataset, the
   same batch size and shuffling), read in this process without training: examples per
   second of one reader against one rank's training rate (a ratio above 1: the input is not
   what limits training);
3. quality: `train` with the configured epochs and 2 workers, then embed, index, match and
   evaluate: recall@50 on held-out positives for the model, random, popularity and the
   oracle (the generator's own compatibility ranking without its noise).

    .venv/bin/python benchmarks/train_throughput.py            # 5,000 profiles
    .venv/bin/python benchmarks/train_throughput.py --full     # 100,000 profiles

Goal (issue 5): the model's recall@50 at least 0.9 of the oracle's and 3 times popularity's.
Last line: JSON with examples_per_s_1w, examples_per_s_2w, input_examples_per_s,
recall_at_50, oracle_recall_at_50, random_recall_at_50, popularity_recall_at_50 and more.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_setup import parse_args, peak_rss_mb, synthetic_lake_config  # noqa: E402


def steady_rate(model_dir: str) -> float:
    """Examples per second of a trained model version, over its epochs after the first."""
    with open(os.path.join(model_dir, "model.json")) as f:
        rates = json.load(f)["epoch_examples_per_s"]
    values = [v for e, v in sorted(rates.items(), key=lambda kv: int(kv[0]))]
    steady = values[1:] or values
    return sum(steady) / len(steady)


def input_rate(spark, cfg, steps: int) -> float:
    """Examples per second of one Petastorm reader alone, as a rank reads (no training)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    from lib import lake
    from lib.train.job import pairs_converter, training_pairs
    from lib.train.worker import batch_columns
    features_run = lake.latest_run(spark, cfg.lake.path, "features")["run_id"]
    pairs = training_pairs(spark, cfg, features_run)
    converter = pairs_converter(spark, cfg, pairs, pairs.count())
    b = cfg.train.batch_size
    try:
        with converter.make_tf_dataset(batch_size=b, num_epochs=None, cur_shard=0, shard_count=1,
                                       shuffling_queue_capacity=4 * b, workers_count=1, seed=cfg.train.seed) as ds:
            it = iter(ds)
            columns = batch_columns({})
            for _ in range(5):  # warm-up: the reader's first row groups
                next(it)
            started = time.time()
            for _ in range(steps):
                batch = next(it)
                tuple(getattr(batch, c) for c in columns)
            return steps * b / (time.time() - started)
    finally:
        converter.delete()


def main() -> None:
    p_args = parse_args(__doc__, 5_000, 100_000)
    cfg, lake_dir = synthetic_lake_config(p_args, "train-throughput-")
    from lib import lake
    from lib.cli import run_stages
    from lib.session import build_spark
    epochs_tp = int(os.environ.get("TWOTOWER_BENCH_EPOCHS", "3"))
    try:
        spark = build_spark(cfg)
        t0 = time.time()
        run_stages(spark, cfg, ["ingest", "synthesize", "features"], lake.new_run_id())
        setup_s = time.time() - t0

        rates = {}
        for workers in (1, 2):
            c = copy.deepcopy(cfg)
            c.train.num_proc, c.train.epochs = workers, epochs_tp
            info = run_stages(spark, c, ["train"], lake.new_run_id())["train"]
            rates[workers] = steady_rate(info["model_dir"])
            pairs = info["training_pairs"]
        in_rate = input_rate(spark, cfg, steps=200)

        t0 = time.time()
        results = run_stages(spark, cfg, ["train", "embed", "index", "match", "evaluate"], lake.new_run_id())
        quality_s = time.time() - t0
        ev = results["evaluate"]
        spark.stop()
    finally:
        if not p_args.lake:
            shutil.rmtree(lake_dir, ignore_errors=True)
    model, oracle, pop = ev["two_tower_recall"], ev.get("oracle_recall", 0.0), ev["popularity_recall"]
    per_rank_2w = rates[2] / 2
    print(json.dumps({
        "profiles": p_args.n, "training_pairs": pairs, "batch_size_per_rank": cfg.train.batch_size,
        "examples_per_s_1w": round(rates[1], 1), "examples_per_s_2w": round(rates[2], 1),
        "speedup_2w_vs_1w": round(rates[2] / rates[1], 3),
        "input_examples_per_s": round(in_rate, 1),
        "input_vs_train_per_rank_1w": round(in_rate / rates[1], 2),
        "input_vs_train_per_rank_2w": round(in_rate / per_rank_2w, 2),
        "recall_at_50": model, "oracle_recall_at_50": oracle,
        "random_recall_at_50": ev["random_recall"], "popularity_recall_at_50": pop,
        "model_vs_oracle": round(model / oracle, 3) if oracle else None,
        "model_vs_popularity": round(model / pop, 2) if pop else None,
        "epochs": cfg.train.epochs, "k": cfg.match.k, "setup_s": round(setup_s, 1),
        "quality_run_s": round(quality_s, 1), "driver_peak_rss_mb": round(peak_rss_mb(), 1),
    }))


if __name__ == "__main__":
    main()
