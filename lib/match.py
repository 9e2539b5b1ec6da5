"""match: bulk top-K for every active user, searched only in the shards of people who fit.

The hard filters are applied in two places. Mutual gender/orientation fit and "only
active, set-up profiles" are guaranteed by which shards a user searches (see lib.index).
Oneself, everyone the user acted on in training and blocks in either direction are removed
after the search; each shard is over-fetched by that user's count of such exclusions, so K
remain and the merged top-K is exact.

``topk`` is plain numpy and FAISS; ``recommend`` runs it on the executors. The same code
serves the two-tower model and the random and popularity baselines (``scorer``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from lib import lake
from lib.config import Config
from lib.eligibility import active_profiles, excluded_pairs
from lib.errors import UserError

RECS_DDL = "user_id string, rank int, profile_id string, score float"
SCORERS = ("two_tower", "popularity", "random")


@dataclass
class Shard:
    index: object  # faiss.Index over the shard's profile embeddings
    ids: np.ndarray  # [n] object: profile ids, row i of the index
    popularity: np.ndarray  # [n] int64: training positives received

    @property
    def count(self) -> int:
        return len(self.ids)


def load_shard(index_dir: str, entry: dict) -> Shard:
    import faiss
    import pandas as pd
    side = pd.read_parquet(os.path.join(index_dir, entry["ids_file"]))
    return Shard(faiss.read_index(os.path.join(index_dir, entry["file"])),
                 side["profile_id"].to_numpy(dtype=object), side["popularity"].to_numpy(dtype=np.int64))


def shards_for(entries: list, gender, looking_for, gender_filter: bool) -> list:
    """Manifest entries a user may search: people of a gender the user seeks, who seek the user's."""
    if not gender_filter:
        return list(entries)
    wants = set(looking_for if looking_for is not None else ())
    return [e for e in entries if e["gender"] in wants and gender in e["seeks"]]


def _user_seed(seed: int, user_id: str) -> list:
    return [seed, int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little")]


def candidates(queries: np.ndarray, user_ids: list, shards: list, fetch: int, scorer: str, seed: int):
    """(scores [n, m] float32, ids [n, m] object) for each user: per shard its best ``fetch``
    (by the scorer), concatenated over shards. Padding (a shard smaller than ``fetch``) has
    score -inf and id None."""
    n = len(user_ids)
    if scorer == "random":
        # A uniform sample without replacement from the union of the shards: how many come
        # from each shard is hypergeometric, then a random order ranks them.
        counts = np.array([s.count for s in shards], dtype=np.int64)
        total = int(min(fetch, counts.sum()))
        scores = np.full((n, total), -np.inf, dtype=np.float32)
        ids = np.full((n, total), None, dtype=object)
        for r, uid in enumerate(user_ids):
            rng = np.random.default_rng(_user_seed(seed, uid))
            take = rng.multivariate_hypergeometric(counts, total) if total else counts * 0
            picked = [s.ids[rng.choice(s.count, size=t, replace=False)] for s, t in zip(shards, take) if t]
            if picked:
                row = np.concatenate(picked)
                ids[r, :len(row)] = row
                scores[r, :len(row)] = rng.permutation(len(row)).astype(np.float32)
        return scores, ids
    all_scores, all_ids = [], []
    for s in shards:
        kf = min(fetch, s.count)
        if kf == 0:
            continue
        if scorer == "two_tower":
            d, i = s.index.search(queries, kf)
            all_scores.append(d.astype(np.float32))
            all_ids.append(s.ids[np.maximum(i, 0)])
        elif scorer == "popularity":
            order = np.lexsort((s.ids.astype(str), -s.popularity))[:kf]  # most popular, ties by id
            all_scores.append(np.broadcast_to(s.popularity[order].astype(np.float32), (n, kf)))
            all_ids.append(np.broadcast_to(s.ids[order], (n, kf)))
        else:
            raise ValueError(f"unknown scorer {scorer!r}")
    if not all_scores:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), object)
    return np.concatenate(all_scores, axis=1), np.concatenate(all_ids, axis=1)


def topk(queries: np.ndarray, user_ids: list, excluded: list, shards: list, k: int, scorer: str = "two_tower",
         seed: int = 0) -> list:
    """[(user_id, rank, profile_id, score)] with ranks 1..k per user, best first.

    queries:  [n, d] float32 user embeddings (unused by the baselines)
    excluded: per user, the set of profile ids never to return (the user is added)
    """
    fetch = k + 1 + max((len(e) for e in excluded), default=0)
    scores, ids = candidates(queries, user_ids, shards, fetch, scorer, seed)
    out = []
    for r, uid in enumerate(user_ids):
        banned = excluded[r]
        rank = 0
        for j in np.argsort(-scores[r], kind="stable"):
            pid = ids[r, j]
            if pid is None or pid == uid or pid in banned:
                continue
            rank += 1
            out.append((uid, rank, pid, float(scores[r, j])))
            if rank == k:
                break
    return out


def filter_groups(pdf):
    """(gender, looking_for as a sorted tuple, rows) per group of users of ``pdf`` who may
    match the same people: they search the same shards."""
    keys = [(g, tuple(sorted(lf)) if lf is not None else ()) for g, lf in zip(pdf["gender"], pdf["looking_for"])]
    for (gender, lf), grp in pdf.assign(_key=keys).groupby("_key", sort=False):
        yield gender, lf, grp.drop(columns="_key")


_SHARDS: dict = {}  # (index_dir, file) -> Shard, loaded once per Python worker


def _cached_shard(index_dir: str, entry: dict) -> Shard:
    key = (index_dir, entry["file"])
    if key not in _SHARDS:
        _SHARDS[key] = load_shard(index_dir, entry)
    return _SHARDS[key]


def match_queries(spark, cfg: Config, model_version: str):
    """Active users with embedding, gender, looking_for and the profile ids they must never get."""
    from pyspark.sql import functions as F
    emb = (lake.read_table(spark, cfg.lake.path, "user_embeddings", "embed")
           .where(F.col("model_version") == model_version).select("user_id", "embedding"))
    users = active_profiles(lake.read_table(spark, cfg.lake.path, "profiles", "ingest")) \
        .select(F.col("id").alias("user_id"), "gender", "looking_for")
    return emb.join(users, "user_id").join(excluded_lists(spark, cfg), "user_id", "left")


def excluded_lists(spark, cfg: Config):
    """(user_id, excluded): per user the profile ids never to recommend (``excluded_pairs``)."""
    from pyspark.sql import functions as F
    return (excluded_pairs(lake.read_table(spark, cfg.lake.path, "interactions", "synthesize"))
            .groupBy("user_id").agg(F.collect_set("profile_id").alias("excluded")))


def recommend(queries_df, index_dir: str, manifest: dict, k: int, scorer: str, seed: int, batch: int):
    """DataFrame of RECS_DDL rows: top-k per user of ``queries_df`` (see ``match_queries``)."""
    import pandas as pd
    entries, gf = manifest["shards"], manifest["gender_filter"]

    def apply(batches):
        import faiss
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        for pdf in batches:
            if len(pdf) == 0:
                continue
            rows = []
            for gender, lf, grp in filter_groups(pdf):
                shards = [_cached_shard(index_dir, e) for e in shards_for(entries, gender, lf, gf)]
                if not shards:
                    continue  # nobody could match this user
                for start in range(0, len(grp), batch):
                    part = grp.iloc[start:start + batch]
                    q = np.ascontiguousarray(np.stack(part["embedding"].values).astype(np.float32))
                    excl = [set(e) if e is not None else set() for e in part["excluded"]]
                    rows += topk(q, list(part["user_id"]), excl, shards, k, scorer, seed)
            yield pd.DataFrame(rows, columns=["user_id", "rank", "profile_id", "score"])

    return queries_df.mapInPandas(apply, RECS_DDL)


def load_index(spark, cfg: Config, model_version: str):
    """(index_dir, manifest) of the newest index built for ``model_version``."""
    run = lake.latest_run(spark, cfg.lake.path, "index")
    _refuse_if_erased_since(spark, cfg, run)
    index_dir = run["info"]["index_dir"]
    manifest = lake.read_json(os.path.join(index_dir, "manifest.json"))
    if manifest["model_version"] != model_version:
        raise UserError(f"the newest index was built for model {manifest['model_version']}, not {model_version}; "
                        "run 'index' (or pin --set model_version=...)")
    return index_dir, manifest


def _refuse_if_erased_since(spark, cfg: Config, index_run: dict) -> None:
    """An index built before an ingest erased accounts still holds their vectors: matching
    with it could show a deleted or banned account, so it is refused."""
    from pyspark.sql import functions as F
    later = (lake.read_table(spark, cfg.lake.path, "runs")
             .where((F.col("stage") == "ingest") & (F.col("status") == "succeeded"))
             .where(F.col("finished_at") > F.lit(index_run["finished_at"]))
             .where(F.get_json_object("info", "$.erased_rows.profiles").cast("long") > 0)
             .select("run_id").limit(1).collect())
    if later:
        raise UserError(f"ingest run {later[0]['run_id']} erased deleted or banned accounts after the newest index "
                        f"(run {index_run['run_id']}) was built; run embed and index first (or the pipeline)")


def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark.sql import functions as F
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    index_dir, manifest = load_index(spark, cfg, mv)
    recs = recommend(match_queries(spark, cfg, mv), index_dir, manifest, cfg.match.k, "two_tower", 0,
                     cfg.match.query_batch)
    out = (recs.withColumn("model_version", F.lit(mv)).withColumn("run_id", F.lit(run_id))
           .withColumn("generated_at", F.current_timestamp()))
    # One Delta commit replaces the visible matches: readers see the old run or the new one.
    lake.write_table(out, cfg.lake.path, "matches", mode="overwrite")
    stats = lake.read_table(spark, cfg.lake.path, "matches").agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users")).first()
    return {"model_version": mv, "rows": stats["rows"], "users_with_matches": stats["users"], "k": cfg.match.k}
