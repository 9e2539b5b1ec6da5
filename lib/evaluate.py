"""evaluate: precision, recall, MAP and NDCG at K on held-out positives, model against baselines.

Baselines, under the same filters as the model: random, popularity and, where synthetic
positives exist, the oracle: the generator's own ranking (the compatibility score without
its noise; ``oracle_recs``). The oracle shows how much of the held-out set any model could
recover, since the noise that picked the positives is unknowable.

Per user (with at least one held-out positive), for recommendations r_1..r_K and the set R
of held-out positives:
  precision = hits / K, recall = hits / |R|,
  AP = sum over hit ranks i of (hits within the first i / i) / min(|R|, K),
  NDCG = sum over hit ranks i of 1/log2(i+1), divided by the same sum for i = 1..min(|R|, K).
Each is averaged over users; a user with no recommendations scores 0.
``ranking_metrics`` is the plain-Python twin of ``metrics_df``.
"""
from __future__ import annotations

import datetime as dt
import math
import os

from lib import lake
from lib.config import Config
from lib.match import excluded_lists, load_index, match_queries, recommend

METRICS = ("precision", "recall", "map", "ndcg")


def ranking_metrics(recommended: list, relevant: set, k: int) -> dict:
    """Metrics of one user: ``recommended`` profile ids best first, ``relevant`` the held-out ids."""
    hits, ap, dcg = 0, 0.0, 0.0
    for i, pid in enumerate(recommended[:k], start=1):
        if pid in relevant:
            hits += 1
            ap += hits / i
            dcg += 1.0 / math.log2(i + 1)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return {"precision": hits / k, "recall": hits / len(relevant), "map": ap / min(len(relevant), k),
            "ndcg": dcg / ideal}


def metrics_df(recs, heldout, k: int):
    """Mean metrics over the users of ``heldout`` (user_id, profile_id) for ``recs``
    (user_id, rank, profile_id); returns one Row with the columns of METRICS and ``users``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    rel = heldout.groupBy("user_id").agg(F.count("*").alias("n_rel"))
    hits = (recs.where(F.col("rank") <= k).join(heldout, ["user_id", "profile_id"])
            .withColumn("h", F.row_number().over(Window.partitionBy("user_id").orderBy("rank")))
            .groupBy("user_id").agg(F.count("*").alias("hits"), F.sum(F.col("h") / F.col("rank")).alias("ap_sum"),
                                    F.sum(1.0 / F.log2(F.col("rank") + 1)).alias("dcg")))
    ideal = F.aggregate(F.sequence(F.lit(1), F.least(F.col("n_rel"), F.lit(k)).cast("int")), F.lit(0.0),
                        lambda acc, i: acc + 1.0 / F.log2(i + 1))
    per_user = (rel.join(hits, "user_id", "left").fillna(0, ["hits", "ap_sum", "dcg"])
                .select((F.col("hits") / k).alias("precision"), (F.col("hits") / F.col("n_rel")).alias("recall"),
                        (F.col("ap_sum") / F.least(F.col("n_rel"), F.lit(k))).alias("map"),
                        (F.col("dcg") / ideal).alias("ndcg")))
    return per_user.agg(*[F.avg(m).alias(m) for m in METRICS], F.count("*").alias("users")).first()


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    k = cfg.match.k
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    index_dir, manifest = load_index(spark, cfg, mv)
    queries = match_queries(spark, cfg, mv, index_dir, manifest).cache()
    # Held-out positives of users who take part (an inactive user gets no matches by design).
    interactions = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    heldout = (interactions.where((F.col("split") == "heldout") & (F.col("label") == 1))
               .select("user_id", "profile_id").join(queries.select("user_id"), "user_id", "left_semi").cache())
    matches = lake.read_table(spark, cfg.lake.path, "matches", "match").where(F.col("model_version") == mv)
    models = {"two_tower": matches.select("user_id", "rank", "profile_id")}
    for scorer in ("random", "popularity"):
        models[scorer] = recommend(queries, index_dir, manifest, k, scorer, cfg.evaluate.seed, cfg.match.query_batch,
                                   cfg.match.settings_filters, partitions=cfg.match.partitions)
    results = {}
    for name, recs in models.items():
        row = metrics_df(recs, heldout, k)
        results[name] = {m: float(row[m] or 0.0) for m in METRICS}
    if interactions.where((F.col("source") == "synthetic") & (F.col("label") == 1)).limit(1).count():
        results["oracle"] = oracle_metrics(spark, cfg, run_id, heldout, k, manifest["gender_filter"])
    users = heldout.select("user_id").distinct().count()
    queries.unpersist()
    heldout.unpersist()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(run_id, mv, name, k, m, v, now) for name, vals in results.items() for m, v in vals.items()]
    df = spark.createDataFrame(rows, "run_id string, model_version string, model string, k int, metric string, "
                                     "value double, computed_at timestamp")
    lake.write_table(df, cfg.lake.path, "metrics", mode="append")
    report = {"run_id": run_id, "model_version": mv, "k": k, "users_evaluated": users, "metrics": results}
    path = os.path.join(lake.artifact_dir(cfg.lake.path, "reports", run_id), "metrics.json")
    lake.write_json_atomic(path, report)
    print(format_table(results, k, users))
    from lib.tracking import log_evaluation
    mlflow_run = log_evaluation(cfg, mv, results, k)
    return {"model_version": mv, "report": path, "users_evaluated": users, "mlflow_run_id": mlflow_run,
            **{f"{name}_recall": round(v["recall"], 4) for name, v in results.items()}}


def oracle_metrics(spark, cfg: Config, run_id: str, heldout, k: int, gender_filter: bool) -> dict:
    """The metrics of ``oracle_recs`` for the users of ``heldout`` (user_id, profile_id)."""
    search, recs = oracle_recs(spark, cfg, run_id, heldout.select("user_id").distinct(), k, gender_filter)
    try:
        row = metrics_df(recs, heldout, k)
    finally:
        search.close()
    return {m: float(row[m] or 0.0) for m in METRICS}


def oracle_recs(spark, cfg: Config, run_id: str, users, k: int, gender_filter: bool):
    """(CompatibilitySearch, DataFrame of user_id, rank, profile_id, score): for each of
    ``users`` (user_id) the top k by the compatibility score without noise among the
    profiles the model may show them (fit both ways, active, not oneself, not acted on in
    training, not blocked, within both sides' match settings), found like synthesize's
    positives. Close the search when done."""
    from lib.compatibility_search import CompatibilitySearch, pair_people
    from lib.eligibility import active_profiles
    from lib.schema import MUSIC_DDL
    from lib.synthesize import compatibility_weights
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    music = lake.read_table_or_empty(spark, cfg.lake.path, "music_preferences", MUSIC_DDL)
    people = pair_people(active_profiles(profiles), music)
    search = CompatibilitySearch.build(people, compatibility_weights(cfg), lake.staging_dir(cfg.lake.path, run_id),
                                       gender_filter, cfg.synthesize.ivf_min_pool)
    queries = (people.withColumnRenamed("id", "user_id").join(users, "user_id", "left_semi")
               .join(excluded_lists(spark, cfg), "user_id", "left"))
    if not cfg.match.settings_filters:
        return search, search.best(queries, max(cfg.synthesize.retrieve, k), k)
    # Under the match settings too, like the model: all the retrieved (exact for pools up to
    # synthesize.retrieve), those the settings allow, re-ranked.
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from lib.eligibility import as_side, settings_allow
    from lib.index import settings_columns
    wide = search.best(queries, max(cfg.synthesize.retrieve, 4 * k), max(cfg.synthesize.retrieve, 4 * k))
    attrs = active_profiles(profiles).select("id", *settings_columns(profiles))
    allowed = (wide.join(as_side(attrs, "user_id", "u_"), "user_id").join(as_side(attrs, "profile_id", "p_"), "profile_id")
               .where(settings_allow("u_", "p_")))
    ranked = allowed.withColumn("rank", F.row_number().over(Window.partitionBy("user_id").orderBy("rank")))
    return search, ranked.where(F.col("rank") <= k).select("user_id", "rank", "profile_id", "score")


def format_table(results: dict, k: int, users: int) -> str:
    lines = [f"held-out evaluation at K={k} over {users} users",
             f"{'model':<12}" + "".join(f"{m + '@' + str(k):>14}" for m in METRICS)]
    for name, vals in results.items():
        lines.append(f"{name:<12}" + "".join(f"{vals[m]:>14.4f}" for m in METRICS))
    return "\n".join(lines)
