"""Fitting the preprocessor in Spark: the rows are parsed on the executors and only small
aggregates (vocabularies capped by configuration, per-field counts and moments) reach the driver."""
from __future__ import annotations

import datetime as dt
import logging

from lib.config import FeaturesConfig
from lib.features import parse
from lib.features.preprocessor import Preprocessor, check_columns

PARSED_DDL = ("id string, cats map<string,string>, lists map<string,array<string>>, nums map<string,double>, "
              "clipped array<string>")
log = logging.getLogger(__name__)


def feature_inputs(profiles, music):
    """Profiles with their music rows as ``genres`` and ``artists`` lists (one entry per row)."""
    from pyspark.sql import functions as F
    check_columns(profiles.columns, "profiles table")
    lists = music.groupBy(F.col("user_id").alias("id")).agg(F.collect_list("genre").alias("genres"),
                                                            F.collect_list("artist_name").alias("artists"))
    wanted = [c for c in parse.REQUIRED_COLUMNS + parse.OPTIONAL_COLUMNS
              if c in profiles.columns and c not in ("genres", "artists")]
    return profiles.select(*wanted).join(lists, "id", "left")


def parse_rows(inputs, as_of: dt.datetime, new_user_days: int):
    """DataFrame of ``PARSED_DDL``: every input row through ``parse.parse_profile`` on the executors."""
    import pandas as pd

    def apply(batches):
        for pdf in batches:
            out = [parse.parse_profile(r, as_of, new_user_days) for r in pdf.to_dict("records")]
            yield pd.DataFrame({
                "id": [p.id for p in out],
                "cats": [{k: v for k, v in p.cats.items() if v is not None} for p in out],
                "lists": [{k: v for k, v in p.lists.items() if v} for p in out],
                "nums": [{k: v for k, v in p.nums.items() if v is not None} for p in out],
                "clipped": [p.clipped for p in out]})

    return inputs.mapInPandas(apply, PARSED_DDL)


def _top(counts, limit: int, min_count: int) -> dict:
    """{field: [values]}: at most ``limit`` values seen ``min_count`` times or more per field,
    most frequent first, ties by value."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    w = Window.partitionBy("field").orderBy(F.col("n").desc(), F.col("value"))
    rows = (counts.where(F.col("n") >= min_count).withColumn("r", F.row_number().over(w))
            .where(F.col("r") <= limit).orderBy("field", "r").collect())
    out: dict = {}
    for r in rows:
        out.setdefault(r["field"], []).append(r["value"])
    return out


def fit_preprocessor(inputs, version: str, as_of: dt.datetime, fc: FeaturesConfig) -> tuple[Preprocessor, dict]:
    """(the fitted preprocessor, its feature report) from ``feature_inputs`` rows."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    parsed = parse_rows(inputs, as_of, fc.new_user_days).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        total = parsed.count()
        values = (parsed.select(F.explode("cats").alias("field", "value"))
                  .unionByName(parsed.select(F.explode("lists").alias("field", "values"))
                               .select("field", F.explode("values").alias("value")))
                  .groupBy("field", "value").agg(F.count("*").alias("n"))
                  .persist(StorageLevel.MEMORY_AND_DISK))
        # Rows with a value, per field (a list field counts a row once).
        present = {r["field"]: r["count"] for r in parsed.select(F.explode(F.concat(
            F.map_keys("cats"), F.map_keys("lists"), F.map_keys("nums"))).alias("field")).groupBy("field").count()
            .collect()}
        distinct = {r["field"]: (r["d"], r["frequent"]) for r in values.groupBy("field").agg(
            F.count("*").alias("d"), F.sum((F.col("n") >= fc.min_count).cast("long")).alias("frequent")).collect()}
        top_cats = _top(values.where(F.col("field").isin(*parse.ONE_HOT)), fc.max_categories, fc.min_count)
        top_lists = _top(values.where(F.col("field").isin(*parse.LIST_FIELDS)),
                         max(fc.max_bag_vocab, fc.max_multi_hot), fc.min_count)
        moments = {r["field"]: r for r in parsed.select(F.explode("nums").alias("field", "x")).groupBy("field")
                   .agg(F.mean("x").alias("mean"), F.stddev_pop("x").alias("std")).collect()}
        clipped = {r["rule"]: r["n"] for r in parsed.select(F.explode("clipped").alias("rule"))
                   .groupBy("rule").agg(F.count("*").alias("n")).collect()}
        new_users = parsed.where(F.col("nums")["tenure_days"] < F.log1p(F.lit(float(fc.new_user_days)))).count()
        unknown_attrs = _unknown_attributes(inputs)
    finally:
        parsed.unpersist()
        if "values" in locals():
            values.unpersist()

    multi_hot, bags = {}, {}
    for f in parse.LIST_FIELDS:
        vocab = top_lists.get(f, [])
        if f in parse.MULTI_VALUED and distinct.get(f, (0, 0))[1] <= fc.max_multi_hot:
            multi_hot[f] = vocab
        else:
            length = 1 if f in ("city", "job_title") else fc.max_bag_ids
            bags[f] = {"vocab": vocab[:fc.max_bag_vocab], "buckets": fc.hash_buckets, "length": length}
    numeric = {}
    for f in parse.NUMERIC:
        m = moments.get(f)
        # A field with no values or no spread still gets a valid (identity-like) scaling.
        mean = float(m["mean"]) if m is not None and m["mean"] is not None else 0.0
        std = float(m["std"]) if m is not None and m["std"] else 1.0
        numeric[f] = [mean, std]
    pre = Preprocessor(version=version, fitted_at=as_of.isoformat(), new_user_days=fc.new_user_days,
                       one_hot={f: top_cats.get(f, []) for f in parse.ONE_HOT}, multi_hot=multi_hot, bags=bags,
                       numeric=numeric)
    report = feature_report(pre, total, present, distinct, clipped, new_users, unknown_attrs,
                            parse.unknown_columns(inputs.columns))
    if unknown_attrs:
        log.warning("ignoring extra attribute(s) the features do not read: %s",
                    ", ".join(f"{k} ({n} profiles)" for k, n in sorted(unknown_attrs.items())))
    return pre, report


def _unknown_attributes(inputs) -> dict:
    from pyspark.sql import functions as F
    if "attributes" not in inputs.columns:
        return {}
    keys = (inputs.select(F.explode(F.map_keys("attributes")).alias("k")).groupBy("k").count()
            .orderBy(F.col("count").desc()).limit(1000).collect())
    return {r["k"]: r["count"] for r in keys if parse.unknown_attribute(r["k"])}


def feature_report(pre: Preprocessor, total: int, present: dict, distinct: dict, clipped: dict, new_users: int,
                   unknown_attributes: dict, unknown_columns: list) -> dict:
    """Coverage and missing rate per feature, vocabulary sizes, rules that fired."""
    def coverage(f):
        share = present.get(f, 0) / total if total else 0.0
        return {"coverage": round(share, 6), "missing_rate": round(1.0 - share, 6)}

    features = {}
    for f, vocab in pre.one_hot.items():
        features[f] = {"encoding": "one_hot", **coverage(f), "distinct_values": distinct.get(f, (0, 0))[0],
                       "vocab_size": len(vocab)}
    for f, vocab in pre.multi_hot.items():
        features[f] = {"encoding": "multi_hot", **coverage(f), "distinct_values": distinct.get(f, (0, 0))[0],
                       "vocab_size": len(vocab)}
    for f, b in pre.bags.items():
        features[f] = {"encoding": "embedding_bag", **coverage(f), "distinct_values": distinct.get(f, (0, 0))[0],
                       "vocab_size": len(b["vocab"]), "hash_buckets": b["buckets"], "id_slots": b["length"]}
    for f, (mean, std) in pre.numeric.items():
        features[f] = {"encoding": "numeric", **coverage(f), "mean": round(mean, 6), "std": round(std, 6)}
    features["new_user"] = {"encoding": "flag", "coverage": 1.0, "missing_rate": 0.0,
                            "share": round(new_users / total, 6) if total else 0.0}
    return {"version": pre.version, "profiles": total, "fitted_at": pre.fitted_at, "dense_dim": pre.dense_dim,
            "id_slots": pre.id_slots, "features": features, "clipped": dict(sorted(clipped.items())),
            "unknown_attributes": dict(sorted(unknown_attributes.items())), "unknown_columns": unknown_columns}
