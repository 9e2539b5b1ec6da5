"""synthesize: synthetic interactions from the compatibility score, sampled per user.

For each user a few dozen candidates are drawn at random from the pools of people who fit
(of a gender the user seeks, seeking the user's gender) by a join on random slot numbers,
so the cost grows linearly with users, never a cross join. The noisy compatibility
score ranks them: the best become positives ('like'), random others negatives ('pass').
A share of each user's positives is held out for evaluation.
All randomness comes from hashes of (seed, ids): the same seed gives the same rows however
the data is partitioned.
"""
from __future__ import annotations

import math

from lib import lake
from lib.compatibility import DEFAULT_WEIGHTS, PAIR_FIELDS, compatibility_col, gaussian_noise_col, weights
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles
from lib.errors import UserError
from lib.ids import stable_uuid_col
from lib.schema import INTERACTIONS_DDL, MUSIC_DDL, conform

SLOT_SIZE = 2  # profiles per random slot: each draw brings about this many candidates


def pair_attributes(profiles, music):
    """One row per profile with the fields the compatibility score reads (genres from music)."""
    from pyspark.sql import functions as F
    genres = music.groupBy(F.col("user_id").alias("id")).agg(F.array_sort(F.collect_set("genre")).alias("genres"))
    return profiles.join(genres, "id", "left").select("id", *PAIR_FIELDS)


def sample_candidates(active, draws: int, seed: int, gender_filter: bool, attrs=None):
    """(user_id, profile_id) candidate pairs: about ``draws * SLOT_SIZE`` per user, all fitting both ways.

    ``active``: id, gender, looking_for of the profiles that take part. With ``attrs``
    (``pair_attributes``) each pair also carries both sides' fields as ``u_*``/``p_*``,
    picked up on the way through the one join instead of two more joins of every pair;
    such pairs may repeat (``label_pairs`` removes repeats once the rows are narrow).
    """
    from pyspark.sql import functions as F
    # Pools of people who fit from the start: "female>male" holds the women who seek men, so
    # a man seeking women draws only from it and no draw is wasted on someone who would not
    # want him (with a plain gender pool most of a gay man's draws were).
    if gender_filter:
        pool = active.select("id", "gender", "looking_for", F.explode("looking_for").alias("_seeks")) \
            .withColumn("pool", F.concat_ws(">", "gender", "_seeks")).drop("_seeks")
    else:
        pool = active.select("id", "gender", "looking_for", F.lit("all").alias("pool"))
    sizes = {r["pool"]: r["count"] for r in pool.groupBy("pool").count().collect()}  # one row per pool
    slots = {k: max(1, math.ceil(n / SLOT_SIZE)) for k, n in sizes.items() if k is not None}
    if not slots:
        raise UserError("no active profiles to synthesize interactions for")
    slot_map = F.create_map(*[F.lit(x) for kv in slots.items() for x in kv])
    size_map = F.create_map(*[F.lit(x) for kv in sizes.items() if kv[0] is not None for x in kv])
    pool = pool.withColumn("slot", F.pmod(F.xxhash64(F.lit(seed), F.col("id")), F.element_at(slot_map, F.col("pool"))))
    if attrs is not None:
        pool = pool.join(attrs.select("id", *[F.col(f).alias(f"p_{f}") for f in PAIR_FIELDS]), "id")

    wants = (F.transform("looking_for", lambda g: F.concat_ws(">", g, F.col("gender"))) if gender_filter
             else F.array(F.lit("all")))
    users = active.select(F.col("id").alias("user_id"), F.col("gender").alias("u_gender"), wants.alias("wants"))
    if attrs is not None:
        users = users.join(attrs.select(F.col("id").alias("user_id"), *[F.col(f).alias(f"u_{f}") for f in PAIR_FIELDS]),
                           "user_id")
    users = (users.withColumn("want", F.explode("wants"))
             .where(F.element_at(size_map, F.col("want")).isNotNull()))
    # Draws per sought pool in proportion to the pool's size.
    total = F.aggregate(F.transform("wants", lambda g: F.coalesce(F.element_at(size_map, g), F.lit(0))),
                        F.lit(0).cast("long"), lambda acc, x: acc + x)
    users = (users.withColumn("n", F.ceil(F.lit(draws) * F.element_at(size_map, F.col("want")) / total))
             .withColumn("j", F.explode(F.sequence(F.lit(0), F.col("n").cast("int") - 1)))
             .withColumn("slot", F.pmod(F.xxhash64(F.lit(seed), F.col("user_id"), F.col("want"), F.col("j")),
                                        F.element_at(slot_map, F.col("want")))))
    pairs = users.join(pool, (users.want == pool.pool) & (users.slot == pool.slot)) \
        .where(F.col("user_id") != F.col("id"))
    if gender_filter:
        pairs = pairs.where(F.array_contains(F.col("looking_for"), F.col("u_gender")))
    if attrs is not None:
        return pairs.select("user_id", F.col("id").alias("profile_id"),
                            *[F.col(f"{side}_{f}") for side in "up" for f in PAIR_FIELDS])
    return pairs.select("user_id", F.col("id").alias("profile_id")).distinct()


def label_pairs(pairs, attrs, cfg_syn, seed: int, w: dict | None = None):
    """Score candidate pairs and pick each user's positives and negatives; adds the split.
    ``pairs`` may already carry the ``u_*``/``p_*`` fields (then ``attrs`` is not used)."""
    from pyspark.sql import functions as F
    if "u_age" not in pairs.columns:
        u = attrs.select(F.col("id").alias("user_id"), *[F.col(f).alias(f"u_{f}") for f in PAIR_FIELDS])
        p = attrs.select(F.col("id").alias("profile_id"), *[F.col(f).alias(f"p_{f}") for f in PAIR_FIELDS])
        pairs = pairs.join(u, "user_id").join(p, "profile_id")
    # The score depends only on the pair, so repeats of a pair collapse once the rows are narrow.
    scored = (pairs.withColumn("score", compatibility_col(w or DEFAULT_WEIGHTS)
                               + F.lit(cfg_syn.noise) * gaussian_noise_col(seed, F.col("user_id"), F.col("profile_id")))
              .select("user_id", "profile_id", "score").distinct())
    # Each user's candidates gathered once and picked with array functions: one shuffle of
    # narrow rows instead of a sort per window.
    neg_key = F.xxhash64(F.lit(seed), F.lit("neg"), F.col("user_id"), F.col("profile_id"))
    split_key = F.xxhash64(F.lit(seed), F.lit("split"), F.col("user_id"), F.col("profile_id"))
    per_user = scored.groupBy("user_id").agg(F.array_sort(F.collect_list(F.struct(
        (-F.col("score")).alias("s"), F.col("profile_id").alias("p"), neg_key.alias("n"), split_key.alias("h"))))
        .alias("c"))
    n_pos, n_neg = cfg_syn.positives_per_user, cfg_syn.negatives_per_user
    pos = F.slice("c", 1, n_pos)  # best score first; ties by profile id
    rest = F.slice("c", n_pos + 1, 1 << 30)
    neg = F.slice(F.array_sort(F.transform(rest, lambda x: F.struct(x["n"].alias("k"), x["p"].alias("p")))), 1, n_neg)
    # The held-out share of the positives: the first round(fraction * n) by a hash of the pair.
    held_pos = F.array_sort(F.transform(pos, lambda x: F.struct(x["h"].alias("k"), x["p"].alias("p"))))
    n_held = F.round(F.size(held_pos) * F.lit(cfg_syn.holdout_fraction)).cast("int")
    rows = per_user.select("user_id", F.concat(
        F.transform(held_pos, lambda x, i: F.struct(x["p"].alias("profile_id"), F.lit(1).alias("label"),
                                                    F.when(i < n_held, "heldout").otherwise("train").alias("split"))),
        F.transform(neg, lambda x: F.struct(x["p"].alias("profile_id"), F.lit(0).alias("label"),
                                            F.lit("train").alias("split")))).alias("picked"))
    return rows.select("user_id", F.explode("picked").alias("x")).select("user_id", "x.profile_id", "x.label",
                                                                         "x.split")


def split_holdout(interactions, fraction: float, seed: int):
    """Mark round(fraction * n) of each user's n positives 'heldout' (chosen by hash), the rest 'train'."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    w = Window.partitionBy("user_id", "label").orderBy(
        F.xxhash64(F.lit(seed), F.lit("split"), F.col("user_id"), F.col("profile_id")), F.col("profile_id"))
    n = F.count("*").over(Window.partitionBy("user_id", "label"))
    held = (F.col("label") == 1) & (F.row_number().over(w) <= F.round(n * F.lit(fraction)))
    return interactions.withColumn("split", F.when(held, "heldout").otherwise("train"))


def compatibility_weights(cfg: Config) -> dict:
    """The compatibility weights of the configured archetype file (defaults without one)."""
    import os
    from lib.sources.synthetic import load_archetypes
    path = cfg.source.archetypes_file
    return weights(load_archetypes(path)) if path and os.path.exists(path) else dict(DEFAULT_WEIGHTS)


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    syn = cfg.synthesize
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    music = lake.read_table_or_empty(spark, cfg.lake.path, "music_preferences", MUSIC_DDL)
    active = active_profiles(profiles).select("id", "gender", "looking_for", *[
        f for f in PAIR_FIELDS if f != "genres"]).cache()
    attrs = pair_attributes(active, music).cache()  # read twice: the pool side and the user side
    pairs = sample_candidates(active, syn.candidate_draws, syn.seed, gender_filter_on(cfg.source), attrs)
    labelled = label_pairs(pairs, attrs, syn, syn.seed, compatibility_weights(cfg))
    rows = (labelled.withColumn("event", F.when(F.col("label") == 1, "like").otherwise("pass"))
            .withColumn("id", stable_uuid_col(F.concat_ws(":", F.lit("synthetic"), "user_id", "profile_id")))
            .withColumn("source", F.lit("synthetic"))
            .withColumn("created_at", F.current_timestamp())
            .withColumn("run_id", F.lit(run_id)))
    # No content hash: synthetic rows are replaced as a whole, never merged row by row.
    rows = conform(rows, INTERACTIONS_DDL)
    lake.replace_slice(spark, rows, cfg.lake.path, "interactions", "source", "synthetic", partitioned=False)
    active.unpersist()
    attrs.unpersist()
    syn_rows = lake.read_table(spark, cfg.lake.path, "interactions").where(F.col("source") == "synthetic")

    def n(label, split):
        return F.sum(((F.col("label") == label) & (F.col("split") == split)).cast("int"))

    stats = syn_rows.agg(F.countDistinct("user_id").alias("users_with_interactions"),
                         n(1, "train").alias("positive_train"), n(1, "heldout").alias("positive_heldout"),
                         n(0, "train").alias("negative_train")).first()
    return {k: int(v or 0) for k, v in stats.asDict().items()}
