"""audit: check the published matches against every hard filter, over the whole table.

Counts the rows that break a rule (oneself, gender/orientation fit either way, an inactive
account on either side, a pair the user already acted on in training, a block either way)
and the users who got fewer than min(K, candidates they could get). Any violation fails
the job. Runs on the executors; only the counts reach the driver.
"""
from __future__ import annotations

from lib import lake
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles, blocked_pairs, excluded_pairs
from lib.errors import CheckFailed


def audit_matches(spark, cfg: Config) -> dict:
    from pyspark.sql import functions as F
    gf = gender_filter_on(cfg.source)
    matches = lake.read_table(spark, cfg.lake.path, "matches", "match")
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    active = active_profiles(profiles).select("id", "gender", "looking_for").withColumn("active", F.lit(True))
    u = active.select(F.col("id").alias("user_id"), F.col("gender").alias("ug"), F.col("looking_for").alias("ul"),
                      F.col("active").alias("u_active"))
    p = active.select(F.col("id").alias("profile_id"), F.col("gender").alias("pg"),
                      F.col("looking_for").alias("pl"), F.col("active").alias("p_active"))
    acted = inter.where(F.col("split") == "train").select("user_id", "profile_id").distinct() \
        .withColumn("acted", F.lit(True))
    blocked = blocked_pairs(inter).withColumn("blocked", F.lit(True))
    fit = F.array_contains("ul", F.col("pg")) & F.array_contains("pl", F.col("ug")) if gf else F.lit(True)
    rows = (matches.join(u, "user_id", "left").join(p, "profile_id", "left")
            .join(acted, ["user_id", "profile_id"], "left").join(blocked, ["user_id", "profile_id"], "left"))
    v = rows.agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"),
        F.sum((F.col("user_id") == F.col("profile_id")).cast("int")).alias("self"),
        F.sum((~F.coalesce(fit, F.lit(False))).cast("int")).alias("gender_fit"),
        F.sum((F.col("u_active").isNull() | F.col("p_active").isNull()).cast("int")).alias("inactive"),
        F.sum(F.col("acted").isNotNull().cast("int")).alias("already_acted_on"),
        F.sum(F.col("blocked").isNotNull().cast("int")).alias("blocked"),
    ).first().asDict()
    # Users short of matches: fewer than min(K, fitting active candidates not excluded).
    pools = [(r["gender"], r["looking_for"], r["count"]) for r in
             active.groupBy("gender", "looking_for").count().collect()]  # one row per (gender, seeks) pair
    ug = active.select(F.col("id").alias("user_id"), "gender", "looking_for")
    size_rows = []
    for g, lf, _ in pools:
        n = sum(c for pg_, pl_, c in pools if not gf or (pg_ in (lf or []) and g in (pl_ or [])))
        size_rows.append((g, lf, n))
    sizes = spark.createDataFrame(size_rows, "gender string, looking_for array<string>, pool long")
    fits_self = F.array_contains("looking_for", F.col("gender")) if gf else F.lit(True)
    excl = (excluded_pairs(inter).join(p, "profile_id").join(u, "user_id")
            .where(fit & (F.col("user_id") != F.col("profile_id")))
            .groupBy("user_id").agg(F.count("*").alias("n_excl")))
    got = matches.groupBy("user_id").agg(F.count("*").alias("n"))
    expected = (ug.join(sizes, ["gender", "looking_for"], "left").join(excl, "user_id", "left").join(got, "user_id", "left")
                .select(F.least(F.lit(cfg.match.k),
                                F.coalesce("pool", F.lit(0)) - F.coalesce(fits_self.cast("int"), F.lit(0))
                                - F.coalesce("n_excl", F.lit(0))).alias("want"),
                        F.coalesce("n", F.lit(0)).alias("n")))
    short = expected.where(F.col("n") < F.col("want")).count()
    v = {k: int(x or 0) for k, x in v.items()}
    v["users_short_of_matches"] = short
    return v


def run(spark, cfg: Config, run_id: str) -> dict:
    v = audit_matches(spark, cfg)
    broken = {k: n for k, n in v.items() if k not in ("rows", "users") and n}
    if broken:
        raise CheckFailed(f"the published matches break the hard filters: {broken} (of {v['rows']} rows); "
                          "this is a bug, please report it with the run id")
    return v
