"""audit: check the published matches against every hard filter, over the whole table.

Counts the rows that break a rule (oneself, gender/orientation fit either way, an inactive
account on either side, a pair the user already acted on in training, a block either way,
and with ``match.settings_filters`` an age range or maximum distance of either side), and
the users who got fewer than min(K, candidates they could get): of the users with fewer
than K, up to ``audit.short_sample`` (drawn at random) have every candidate recounted.
Any violation fails the job. Runs on the executors; only the counts reach the driver.
The rules are written here again in Spark SQL (lib.eligibility), not taken from the
numpy code that applied them.
"""
from __future__ import annotations

from lib import lake
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles, as_side, blocked_pairs, excluded_pairs, settings_allow
from lib.errors import CheckFailed


NOT_CHECKED = "not-checked(match.settings_filters=false)"


def audit_matches(spark, cfg: Config) -> dict:
    from pyspark.sql import functions as F
    from lib.index import settings_columns
    # The published rows are judged by the settings the match run that wrote them used.
    made = lake.latest_run(spark, cfg.lake.path, "match")["info"]
    gf = made.get("gender_filter", gender_filter_on(cfg.source))
    settings = made.get("settings_filters", cfg.match.settings_filters)
    k = made.get("k", cfg.match.k)
    matches = lake.read_table(spark, cfg.lake.path, "matches", "match")
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    active = active_profiles(profiles).select("id", "gender", "looking_for", *settings_columns(profiles))
    u = as_side(active.withColumn("active", F.lit(True)), "user_id", "u_")
    p = as_side(active.withColumn("active", F.lit(True)), "profile_id", "p_")
    acted = inter.where(F.col("split") == "train").select("user_id", "profile_id").distinct() \
        .withColumn("acted", F.lit(True))
    blocked = blocked_pairs(inter).withColumn("blocked", F.lit(True))
    fit = (F.array_contains("u_looking_for", F.col("p_gender")) & F.array_contains("p_looking_for", F.col("u_gender"))
           if gf else F.lit(True))
    allowed = settings_allow("u_", "p_") if settings else F.lit(True)
    rows = (matches.join(u, "user_id", "left").join(p, "profile_id", "left")
            .join(acted, ["user_id", "profile_id"], "left").join(blocked, ["user_id", "profile_id"], "left"))
    v = rows.agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"),
        F.sum((F.col("user_id") == F.col("profile_id")).cast("int")).alias("self"),
        F.sum((~F.coalesce(fit, F.lit(False))).cast("int")).alias("gender_fit"),
        F.sum((F.col("u_active").isNull() | F.col("p_active").isNull()).cast("int")).alias("inactive"),
        F.sum(F.col("acted").isNotNull().cast("int")).alias("already_acted_on"),
        F.sum(F.col("blocked").isNotNull().cast("int")).alias("blocked"),
        F.sum((F.col("u_active").isNotNull() & F.col("p_active").isNotNull() & ~allowed).cast("int"))
        .alias("age_or_distance_settings"),
    ).first().asDict()
    v = {k: int(x or 0) for k, x in v.items()}
    if not settings:  # say so: a 0 here would read as "checked, none broken"
        v["age_or_distance_settings"] = NOT_CHECKED
    v.update(_short_users(spark, cfg, k, matches, u, p, fit & allowed, inter))
    return v


def _short_users(spark, cfg: Config, k: int, matches, u, p, rule, inter) -> dict:
    """Of the active users with fewer than K matches, a random sample (``audit.short_sample``)
    with every candidate counted: a user short of min(K, candidates) is a violation."""
    from pyspark.sql import functions as F
    got = matches.groupBy("user_id").agg(F.count("*").alias("n"))
    short = (u.join(got, "user_id", "left").withColumn("n", F.coalesce("n", F.lit(0)))
             .where(F.col("n") < k))
    n_short = short.count()
    sample = short.orderBy(F.rand(cfg.evaluate.seed)).limit(cfg.audit.short_sample).cache()
    pool = (sample.crossJoin(p).where(rule & (F.col("user_id") != F.col("profile_id")))
            .join(excluded_pairs(inter), ["user_id", "profile_id"], "left_anti")
            .groupBy("user_id").agg(F.count("*").alias("pool")))
    bad = (sample.join(pool, "user_id", "left")
           .where(F.col("n") < F.least(F.lit(k), F.coalesce("pool", F.lit(0)))).count())
    checked = sample.count()
    sample.unpersist()
    return {"users_short_of_matches": bad, "users_with_fewer_than_k": n_short, "short_users_checked": checked}


def run(spark, cfg: Config, run_id: str) -> dict:
    v = audit_matches(spark, cfg)
    broken = {k: n for k, n in v.items()
              if k not in ("rows", "users", "users_with_fewer_than_k", "short_users_checked") and n != NOT_CHECKED
              and n}
    if broken:
        made = lake.latest_run(spark, cfg.lake.path, "match")["run_id"]
        raise CheckFailed(f"the published matches of match run {made} break the hard filters or leave users "
                          f"short: {broken} (of {v['rows']} rows); this is a bug, please report it with that run id")
    return v
