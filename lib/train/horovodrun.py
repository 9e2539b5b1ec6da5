"""Training under ``horovodrun`` without Spark (a GPU box):

    horovodrun -np 4 -H localhost:4 --gloo python -m lib.train.horovodrun PLAN.json

PLAN.json is written by the ``train`` job (train.launcher=horovodrun): the training
parameters and the Parquet files Petastorm reads. Each rank reads its shard of them.
"""
from __future__ import annotations

import json
import sys


def main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: horovodrun -np N --gloo python -m lib.train.horovodrun PLAN.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    from petastorm.spark import SparkDatasetConverter

    from lib.train.worker import train_worker
    c = plan["converter"]
    converter = SparkDatasetConverter(c["cache_dir_url"], c["file_urls"], c["dataset_size"])
    train_worker(converter, plan["params"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
