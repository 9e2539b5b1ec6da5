"""Fitting the preprocessor in Spark: only small aggregates reach the driver."""
from __future__ import annotations

from lib.features.preprocessor import CATEGORICAL, MULTI_HOT, NUMERIC, Preprocessor

MAX_ATTRIBUTE_KEYS = 50


def feature_inputs(profiles, music):
    """Profiles with their music genres: the columns of ``preprocessor.INPUT_COLUMNS``."""
    from pyspark.sql import functions as F
    genres = music.groupBy(F.col("user_id").alias("id")).agg(F.array_sort(F.collect_set("genre")).alias("genres"))
    return profiles.join(genres, "id", "left").select(
        "id", *CATEGORICAL, *MULTI_HOT, *[F.col(c).cast("double").alias(c) for c in NUMERIC], "attributes")


def fit_preprocessor(inputs, version: str, max_categories: int, max_multi_hot: int) -> Preprocessor:
    """Vocabularies (most frequent values first, ties by value) and mean/std from ``inputs``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def top(df, limit):
        """{field: [values]} from a (field, value) DataFrame, at most ``limit`` per field."""
        w = Window.partitionBy("field").orderBy(F.col("n").desc(), F.col("value"))
        rows = (df.where(F.col("value").isNotNull() & (F.col("value") != ""))
                .groupBy("field", "value").agg(F.count("*").alias("n"))
                .withColumn("r", F.row_number().over(w)).where(F.col("r") <= limit)
                .orderBy("field", "r").collect())
        out: dict = {}
        for r in rows:
            out.setdefault(r["field"], []).append(r["value"])
        return out

    cat = inputs.select(F.explode(F.array(*[F.struct(F.lit(c).alias("field"), F.col(c).cast("string").alias("value"))
                                            for c in CATEGORICAL])).alias("s")).select("s.*")
    multi = inputs.select(F.explode(F.array(*[F.struct(F.lit(c).alias("field"), F.col(c).alias("values"))
                                              for c in MULTI_HOT])).alias("s")) \
        .select("s.field", F.explode_outer("s.values").alias("value"))
    attrs = inputs.select(F.explode("attributes").alias("field", "value"))
    key_counts = attrs.groupBy("field").count().orderBy(F.col("count").desc(), "field").limit(MAX_ATTRIBUTE_KEYS)
    attr_keys = sorted(r["field"] for r in key_counts.collect())
    aggs = [F.mean(c).alias(f"{c}_mean") for c in NUMERIC] + [F.stddev_pop(c).alias(f"{c}_std") for c in NUMERIC]
    stats = inputs.agg(*aggs).first()
    numeric = {}
    for c in NUMERIC:
        mean, std = stats[f"{c}_mean"], stats[f"{c}_std"]
        # A column with no values or no spread still gets a valid (identity-like) scaling.
        numeric[c] = [float(mean) if mean is not None else 0.0, float(std) if std else 1.0]
    cats = top(cat, max_categories)
    attributes = top(attrs.where(F.col("field").isin(*attr_keys)), max_categories) if attr_keys else {}
    multis = top(multi, max_multi_hot)
    return Preprocessor(
        version=version,
        categorical={c: cats.get(c, []) for c in CATEGORICAL},
        attributes={k: attributes.get(k, []) for k in attr_keys},
        multi_hot={c: multis.get(c, []) for c in MULTI_HOT},
        numeric=numeric,
    )
