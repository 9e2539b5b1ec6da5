"""synthesize: synthetic interactions from the compatibility score, sampled per user.

Positives: each user's ``positives_per_user`` best by the noisy compatibility score
(score + ``noise`` x a Gaussian draw per pair) among everyone who fits both ways, as near as
a search can tell: the ``retrieve`` best by the score's feature map (FAISS, per pool of
people who fit) are rescored exactly (``lib.compatibility_search``). Negatives: random
draws from the same pools by a join on random slot numbers (a few per user). Neither is a
cross join: the cost grows about linearly with users. A share of each user's positives is
held out for evaluation. All randomness comes from hashes of (seed, ids): the same seed
gives the same rows however the data is partitioned.
"""
from __future__ import annotations

import math
import os

from lib import lake
from lib.compatibility import DEFAULT_WEIGHTS, weights
from lib.compatibility_search import CompatibilitySearch, pair_people
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles
from lib.errors import UserError
from lib.ids import stable_uuid_col
from lib.schema import INTERACTIONS_DDL, MUSIC_DDL, conform

SLOT_SIZE = 2  # profiles per random slot: each draw brings about this many candidates


def sample_candidates(active, draws: int, seed: int, gender_filter: bool):
    """Distinct (user_id, profile_id) pairs drawn at random: about ``draws * SLOT_SIZE`` per
    user, all fitting both ways, never oneself. ``active``: id, gender, looking_for of the
    profiles that take part."""
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

    wants = (F.transform("looking_for", lambda g: F.concat_ws(">", g, F.col("gender"))) if gender_filter
             else F.array(F.lit("all")))
    users = active.select(F.col("id").alias("user_id"), F.col("gender").alias("u_gender"), wants.alias("wants"))
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
    return pairs.select("user_id", F.col("id").alias("profile_id")).distinct()


def label_pairs(positives, drawn, cfg_syn, seed: int):
    """Interaction rows (user_id, profile_id, label, split): ``positives`` (user_id,
    profile_id) labelled 1, a round(holdout_fraction * n) of each user's n chosen by a hash
    of the pair held out; ``negatives_per_user`` of the ``drawn`` pairs (user_id,
    profile_id) that are not positives, chosen by a hash of the pair, labelled 0."""
    from pyspark.sql import functions as F
    neg_key = F.xxhash64(F.lit(seed), F.lit("neg"), F.col("user_id"), F.col("profile_id"))
    split_key = F.xxhash64(F.lit(seed), F.lit("split"), F.col("user_id"), F.col("profile_id"))
    both = (positives.select("user_id", "profile_id", F.lit(True).alias("pos"))
            .unionByName(drawn.select("user_id", "profile_id", F.lit(False).alias("pos"))))
    # Each user's pairs gathered once and picked with array functions: one shuffle of narrow
    # rows instead of a sort per window, and the positives (a FAISS search) computed once.
    per_user = both.groupBy("user_id").agg(F.array_sort(F.array_distinct(F.collect_list(F.struct(
        F.col("pos").alias("pos"), F.when(F.col("pos"), split_key).otherwise(neg_key).alias("k"),
        F.col("profile_id").alias("p"))))).alias("c"))
    pos = F.filter("c", lambda x: x["pos"])  # in split-hash order
    pos_ids = F.transform(pos, lambda x: x["p"])
    neg = F.slice(F.filter("c", lambda x: ~x["pos"] & ~F.array_contains(pos_ids, x["p"])), 1,
                  cfg_syn.negatives_per_user)
    n_held = F.round(F.size(pos) * F.lit(cfg_syn.holdout_fraction)).cast("int")
    rows = per_user.select("user_id", F.concat(
        F.transform(pos, lambda x, i: F.struct(x["p"].alias("profile_id"), F.lit(1).alias("label"),
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
    from lib.sources.synthetic import load_archetypes
    path = cfg.source.archetypes_file
    return weights(load_archetypes(path)) if path and os.path.exists(path) else dict(DEFAULT_WEIGHTS)


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    syn = cfg.synthesize
    gf = gender_filter_on(cfg.source)
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    music = lake.read_table_or_empty(spark, cfg.lake.path, "music_preferences", MUSIC_DDL)
    people = pair_people(active_profiles(profiles), music).cache()  # read by the pools, the users and the draws
    scratch = lake.staging_dir(cfg.lake.path, run_id)
    search = CompatibilitySearch.build(people, compatibility_weights(cfg), scratch, gf, syn.ivf_min_pool)
    try:
        positives = search.best(people.withColumnRenamed("id", "user_id"), syn.retrieve, syn.positives_per_user,
                                syn.noise, syn.seed)
        drawn = sample_candidates(people.select("id", "gender", "looking_for"), syn.candidate_draws, syn.seed, gf)
        labelled = label_pairs(positives, drawn, syn, syn.seed)
        rows = (labelled.withColumn("event", F.when(F.col("label") == 1, "like").otherwise("pass"))
                .withColumn("id", stable_uuid_col(F.concat_ws(":", F.lit("synthetic"), "user_id", "profile_id")))
                .withColumn("source", F.lit("synthetic"))
                .withColumn("created_at", F.current_timestamp())
                .withColumn("run_id", F.lit(run_id)))
        # No content hash: synthetic rows are replaced as a whole, never merged row by row.
        rows = conform(rows, INTERACTIONS_DDL)
        lake.replace_slice(spark, rows, cfg.lake.path, "interactions", "source", "synthetic", partitioned=False)
    finally:
        search.close()
        people.unpersist()
    syn_rows = lake.read_table(spark, cfg.lake.path, "interactions").where(F.col("source") == "synthetic")

    def n(label, split):
        return F.sum(((F.col("label") == label) & (F.col("split") == split)).cast("int"))

    stats = syn_rows.agg(F.countDistinct("user_id").alias("users_with_interactions"),
                         n(1, "train").alias("positive_train"), n(1, "heldout").alias("positive_heldout"),
                         n(0, "train").alias("negative_train")).first()
    return {k: int(v or 0) for k, v in stats.asDict().items()}
