"""index: FAISS shards of the profile embeddings, one group of shards per hard-filter pool.

Profiles are grouped by their gender and the genders they seek: a user only ever searches
the shards of people who could match them (a straight woman never searches the shard of
men seeking men), which cuts the work more than any index type does. A group larger than
``index.max_shard_size`` is split by hash into several shards. Shards are built in
parallel on the executors and written under a temporary folder that is renamed into place
with its manifest.
"""
from __future__ import annotations

import hashlib
import math
import os

from lib import lake
from lib.config import Config, gender_filter_on
from lib.eligibility import active_profiles
from lib.errors import UserError

MANIFEST = "manifest.json"
_SUMMARY_DDL = "shard int, count long, file string, ids_file string, sha256 string"


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


def _build_shard(out_dir: str):
    """applyInPandas function: one group of rows (one shard) -> its files and a summary row."""
    def build(pdf):
        import faiss
        import numpy as np
        import pandas as pd
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        shard = int(pdf["shard"].iloc[0])
        pdf = pdf.sort_values("profile_id", kind="stable")  # same input, same file
        x = np.ascontiguousarray(np.stack(pdf["embedding"].values).astype(np.float32))
        index = faiss.IndexFlatIP(x.shape[1])  # embeddings are unit length: inner product = cosine
        index.add(x)
        name = f"shard-{shard:05d}"
        path = os.path.join(out_dir, name + ".faiss")
        faiss.write_index(index, path)
        ids_path = os.path.join(out_dir, name + ".ids.parquet")
        pdf[["profile_id", "popularity"]].reset_index(drop=True).to_parquet(ids_path, index=False)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        return pd.DataFrame([{"shard": shard, "count": len(pdf), "file": name + ".faiss",
                              "ids_file": name + ".ids.parquet", "sha256": digest}])
    return build


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    gf = gender_filter_on(cfg.source)
    emb = lake.read_table(spark, cfg.lake.path, "profile_embeddings", "embed").where(F.col("model_version") == mv)
    profiles = active_profiles(lake.read_table(spark, cfg.lake.path, "profiles", "ingest"))
    inter = lake.read_table(spark, cfg.lake.path, "interactions", "synthesize")
    popularity = (inter.where((F.col("label") == 1) & (F.col("split") == "train"))
                  .groupBy("profile_id").agg(F.count("*").alias("popularity")))
    rows = (emb.join(profiles.select(F.col("id").alias("profile_id"),
                                     (F.col("gender") if gf else F.lit("all")).alias("g"),
                                     seeks_key_col(gf).alias("seeks")), "profile_id")
            .join(popularity, "profile_id", "left").fillna(0, ["popularity"]))
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
    summary = {r["shard"]: r.asDict() for r in
               rows.select("shard", "profile_id", "embedding", "popularity")
               .groupBy("shard").applyInPandas(_build_shard(tmp_dir), _SUMMARY_DDL).collect()}
    dim = len(emb.select("embedding").first()["embedding"])
    manifest = {"index_run_id": run_id, "model_version": mv, "dim": dim, "metric": "inner_product",
                "gender_filter": gf,
                "shards": [{**summary[s["shard"]], "type": "flat", "gender": s["gender"],
                            "seeks": s["seeks"].split("|")} for s in plan]}
    lake.write_json_atomic(os.path.join(tmp_dir, MANIFEST), manifest)
    lake.publish_dir(tmp_dir, final_dir)
    return {"model_version": mv, "index_dir": final_dir, "shards": len(plan),
            "profiles_indexed": sum(s["count"] for s in manifest["shards"])}
