"""index: FAISS shards of the profile embeddings, one group of shards per hard-filter pool.

Profiles are grouped by their gender and the genders they seek: a user only ever searches
the shards of people who could match them (a straight woman never searches the shard of
men seeking men), which cuts the work more than any index type does. A group larger than
``index.max_shard_size`` is split by hash into several shards. Shards are built in
parallel on the executors and written under a temporary folder that is renamed into place
with its manifest.

Each shard's index type follows its size (``index.type``, auto: flat up to
``index.flat_max`` profiles, IVF above). The manifest lists the model version, the
dimension, every shard's count, type, parameters, its first global position (``offset``:
global positions key the exclusions in ``match``) and the sha-256 of each of its files.
Shard files are described in lib.shard_store.
"""
from __future__ import annotations

import json
import math
import os

from lib import lake
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles
from lib.errors import UserError
from lib.shard_store import ATTRIBUTES, META_COLUMNS, choose_type, sha256_file, write_shard

MANIFEST = "manifest.json"
_SUMMARY_DDL = "shard int, entry string"


def seeks_key_col(gender_filter: bool):
    from pyspark.sql import functions as F
    return F.array_join(F.array_sort(F.col("looking_for")), "|") if gender_filter else F.lit("all")


def plan_shards(groups: list, max_shard_size: int) -> list:
    """[(gender, seeks, count)] -> [{'shard', 'gender', 'seeks', 'sub', 'subs'}], one per shard."""
    plan, shard = [], 0
    for gender, seeks, count in sorted(groups):
        subs = max(1, math.ceil(count / max_shard_size))
        for sub in range(subs):
            plan.append({"shard": shard, "gender": gender, "seeks": seeks, "sub": sub, "subs": subs})
            shard += 1
    return plan


def _build_shard(out_dir: str, cfg_index):
    """applyInPandas function: one group of rows (one shard) -> its files and its manifest entry."""
    def build(pdf):
        import faiss
        import pandas as pd
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        shard = int(pdf["shard"].iloc[0])
        entry = write_shard(out_dir, shard, pdf, choose_type(len(pdf), cfg_index), cfg_index)
        return pd.DataFrame([{"shard": shard, "entry": json.dumps(entry)}])
    return build


def settings_columns(profiles) -> list:
    """The profile columns the filters read; a lake from before the match settings has none
    of them (they are then not set)."""
    from pyspark.sql import functions as F
    return [F.col(c) if c in profiles.columns else F.lit(None).cast("double").alias(c) for c in ATTRIBUTES]


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    gf = gender_filter_on(cfg.source)
    emb = lake.read_table(spark, cfg.lake.path, "profile_embeddings", "embed").where(F.col("model_version") == mv)
    profiles = active_profiles(lake.read_table(spark, cfg.lake.path, "profiles", "ingest"))
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    popularity = (inter.where((F.col("label") == 1) & (F.col("split") == "train"))
                  .groupBy("profile_id").agg(F.count("*").alias("popularity")))
    users = lake.read_table(spark, cfg.lake.path, "user_embeddings", "embed").where(F.col("model_version") == mv)
    rows = (emb.select("profile_id", "embedding")
            .join(profiles.select(F.col("id").alias("profile_id"), (F.col("gender") if gf else F.lit("all")).alias("g"),
                                  seeks_key_col(gf).alias("seeks"), *settings_columns(profiles)), "profile_id")
            .join(popularity, "profile_id", "left").fillna(0, ["popularity"])
            # Their user-tower embedding: how much they would like someone (reciprocal scores).
            .join(users.select(F.col("user_id").alias("profile_id"), F.col("embedding").alias("user_embedding")),
                  "profile_id", "left"))
    groups = [(r["g"], r["seeks"], r["count"]) for r in rows.groupBy("g", "seeks").count().collect()]
    if not groups:
        raise UserError(f"no active profile has an embedding of model {mv}; run 'embed' (and check that "
                        "profiles with setup_complete exist)")
    plan = plan_shards(groups, cfg.index.max_shard_size)
    # Shard of a row: its group (gender, seeks), then a hash bucket within the group.
    group = F.concat_ws("#", "g", "seeks")
    subs_of = F.create_map(*[F.lit(x) for s in plan if s["sub"] == 0 for x in (f"{s['gender']}#{s['seeks']}", s["subs"])])
    shard_of = F.create_map(*[F.lit(x) for s in plan for x in (f"{s['gender']}#{s['seeks']}#{s['sub']}", s["shard"])])
    sub = F.pmod(F.xxhash64("profile_id"), F.element_at(subs_of, group))
    rows = rows.withColumn("shard", F.element_at(shard_of, F.concat_ws("#", group, sub.cast("string"))))

    final_dir = lake.artifact_dir(cfg.lake.path, "indexes", run_id)
    tmp_dir = final_dir + ".tmp"
    os.makedirs(tmp_dir, exist_ok=True)
    # One row per shard reaches the driver: its manifest entry.
    summary = {r["shard"]: json.loads(r["entry"]) for r in
               rows.select("shard", *META_COLUMNS, "embedding", "user_embedding")
               .groupBy("shard").applyInPandas(_build_shard(tmp_dir, cfg.index), _SUMMARY_DDL).collect()}
    dim = len(emb.select("embedding").first()["embedding"])
    shards, offset = [], 0
    for s in plan:
        entry = summary[s["shard"]]
        shards.append({**entry, "offset": offset, "gender": s["gender"], "seeks": s["seeks"].split("|")})
        offset += entry["count"]
    manifest = {"index_run_id": run_id, "model_version": mv, "dim": dim, "metric": "inner_product",
                "gender_filter": gf, "count": offset, "shards": shards}
    lake.write_json_atomic(os.path.join(tmp_dir, MANIFEST), manifest)
    # Recorded in the run (a Delta table, apart from the files): an edited manifest (a shard's
    # gender label, say) would send users to the wrong shards, so match checks it.
    manifest_sha256 = sha256_file(os.path.join(tmp_dir, MANIFEST))
    lake.publish_dir(tmp_dir, final_dir)
    # Only the newest index is ever searched (match refuses an older one); with the default
    # keep of 2 the one before stays for a match still reading it. Older ones go: they hold
    # erased accounts' vectors.
    removed = lake.prune_artifacts(cfg.lake.path, "indexes", cfg.index.keep)
    types = sorted({s["type"] for s in shards})
    return {"model_version": mv, "index_dir": final_dir, "shards": len(plan), "types": types,
            "profiles_indexed": offset, "old_indexes_removed": len(removed), "manifest_sha256": manifest_sha256}
