"""Each user's best profiles by the compatibility score, among those who fit, on the executors.

The score (``lib.compatibility``) ranks everyone a user may match, but scoring every pair
is a cross join. Instead, in two steps:

1. ``CompatibilitySearch.build``: the profiles grouped like the index shards, by gender and
   genders sought (``lib.index``), each group a pool: ``phi`` (``lib.compatibility_map``) of
   its profiles in a FAISS index and their pair fields, written on the executors under a
   scratch folder (never through the driver).
2. ``CompatibilitySearch.best``: per user, on the executors (``mapInPandas``, pools loaded
   once per Python worker), the ``retrieve`` best by phi over the pools the user may match
   (``lib.match.shards_for``), oneself and the excluded left out; these are rescored with
   the exact score, plus ``noise`` x a Gaussian draw per pair, and the best ``keep`` return.

The cost grows with users x pool size for a flat (exact) index; a pool of
``ivf_min_pool`` profiles or more gets an IVF index (approximate, about linear).

Reproducible: phi lies on a grid of 2**-6, so every inner product is exact in float32
whatever order FAISS or BLAS adds it up in; ties are broken by profile id, and a tie that
the search's cut splits is left out whole (``_retrieve``). The same input gives the same
pairs however Spark partitions the users. Used by ``synthesize`` (positives from the
noisy global ranking) and ``evaluate`` (the oracle baseline: noise 0).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass

import numpy as np

from lib.compatibility import PAIR_FIELDS
from lib.compatibility_batch import Encoded, compatibility_pairs, encode
from lib.compatibility_map import CATEGORICAL, SETS, CompatibilityMap, plain_pair_fields

SCORED_DDL = "user_id string, rank int, profile_id string, score double"
GRID = 64.0  # phi is rounded to multiples of 1/GRID: products and sums of a few hundred are exact in float32
VOCAB_SIZE = {"attributes": 1024}  # values per field kept in phi's vocabulary (most frequent first)
DEFAULT_VOCAB_SIZE = 256
IVF_LISTS_PER_SQRT = 4  # IVF: nlist = 4 sqrt(n) ...
IVF_PROBE_SHARE = 8  # ... and nprobe = nlist / 8


def pair_people(active, music):
    """One row per profile: id, gender, looking_for and the fields the score reads (genres
    from the music preferences)."""
    from pyspark.sql import functions as F
    genres = music.groupBy(F.col("user_id").alias("id")).agg(F.array_sort(F.collect_set("genre")).alias("genres"))
    return (active.select("id", "gender", "looking_for", *[f for f in PAIR_FIELDS if f != "genres"])
            .join(genres, "id", "left").select("id", "gender", "looking_for", *PAIR_FIELDS))


def fit_map(people, weights: dict) -> CompatibilityMap:
    """phi's vocabularies from ``people`` (``pair_people``): per field the most frequent
    values (``VOCAB_SIZE``), ties by value. Collects only those values, never a profile."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    parts = [people.select(F.lit(f).alias("field"), F.col(f).alias("value")) for f, _ in CATEGORICAL]
    parts += [people.select(F.lit(f).alias("field"), F.explode(F.array_distinct(f)).alias("value")) for f, _ in SETS]
    entries = people.select(F.explode(F.map_entries("attributes")).alias("e")).where(F.col("e.value").isNotNull())
    parts.append(entries.select(F.lit("attributes").alias("field"),
                                F.concat_ws("=", F.col("e.key"), F.col("e.value")).alias("value")))
    values = parts[0]
    for p in parts[1:]:
        values = values.unionByName(p)
    limit = F.create_map(*[F.lit(x) for kv in VOCAB_SIZE.items() for x in kv])
    counted = (values.where(F.col("value").isNotNull()).groupBy("field", "value").count()
               .withColumn("n", F.row_number().over(Window.partitionBy("field")
                                                    .orderBy(F.col("count").desc(), F.col("value"))))
               .where(F.col("n") <= F.coalesce(F.element_at(limit, F.col("field")), F.lit(DEFAULT_VOCAB_SIZE))))
    vocab: dict = {}
    for r in counted.collect():  # at most the vocabulary sizes: a few thousand rows
        vocab.setdefault(r["field"], []).append((r["n"], r["value"]))
    return CompatibilityMap({f: tuple(v for _, v in sorted(vals)) for f, vals in vocab.items()}, dict(weights))


# --- plain numpy and FAISS ----------------------------------------------------------
@dataclass
class Pool:
    index: object  # faiss.Index over phi of the pool's profiles
    ids: np.ndarray  # [n] str, ascending: row i of the index
    profiles: Encoded  # the pair fields of each profile, for the exact score
    keys: np.ndarray  # [n] uint64: a hash of each id, for the noise
    row_of: dict  # id -> row

    @property
    def count(self) -> int:
        return len(self.ids)


def profile_vectors(cmap: CompatibilityMap, rows: list) -> np.ndarray:
    """[n, dim] float32: phi of ``rows`` on the exact grid (see the module docstring)."""
    return np.ascontiguousarray(np.round(cmap.profiles(rows) * GRID) / GRID, dtype=np.float32)


def query_vectors(cmap: CompatibilityMap, rows: list) -> np.ndarray:
    return np.ascontiguousarray(np.round(cmap.queries(rows) * GRID) / GRID, dtype=np.float32)


def make_index(x: np.ndarray, ivf_min_pool: int):
    """A FAISS inner-product index over ``x`` [n, dim] float32: flat (exact), or IVF from
    ``ivf_min_pool`` rows on (trained on a fixed sample, so the same rows give the same index)."""
    import faiss
    n, d = x.shape
    if n < ivf_min_pool:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, int(IVF_LISTS_PER_SQRT * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = max(1, nlist // IVF_PROBE_SHARE)
    index.add(x)
    return index


def make_pool(ids: list, rows: list, cmap: CompatibilityMap, codes: dict, ivf_min_pool: int = 1 << 62) -> Pool:
    """A Pool of profiles ``ids`` with pair fields ``rows`` (any order: sorted here); ``codes``
    is shared with the users it will be searched for (``lib.compatibility_batch``)."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids = [ids[i] for i in order]
    rows = [rows[i] for i in order]
    return _pool(make_index(profile_vectors(cmap, rows), ivf_min_pool), ids, encode(rows, codes))


def _pool(index, ids: list, profiles: Encoded) -> Pool:
    return Pool(index, np.array(ids, dtype=str), profiles, id_keys(ids), {x: i for i, x in enumerate(ids)})


def id_keys(ids) -> np.ndarray:
    """[n] uint64: the first 8 bytes of blake2b of each id (the same in any process)."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def gaussian_noise(seed: int, user_ids: list, profile_keys: np.ndarray) -> np.ndarray:
    """[n] float64 standard normal draws, one per (seed, user_ids[k], profile k) whatever the
    order or the partitioning: Box-Muller on two uniforms hashed from the pair.
    ``profile_keys``: ``id_keys`` of the profile ids."""
    mine: dict = {}
    for u in user_ids:
        if u not in mine:
            mine[u] = id_keys([f"{seed}\x1f{u}"])[0]
    h1 = _mix64(np.asarray(profile_keys, dtype=np.uint64) ^ np.array([mine[u] for u in user_ids], dtype=np.uint64))
    h2 = _mix64(h1 ^ np.uint64(0x9E3779B97F4A7C15))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    u2 = ((h2 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def _retrieve(pool: Pool, q: np.ndarray, banned: list, m: int):
    """(phi scores [n, m] float32, rows [n, m] int64): per user the pool's best ``m`` by phi,
    ties by id (= row), ``banned[r]`` (a set of ids) left out; padding -inf and -1.

    Which members of a tie FAISS returns at its cut is its own business, so a tie that the
    cut splits is left out whole: what is kept (everything above the last score fetched) is
    the same whatever the batch. A user left with fewer than m / 2 that way (a pool of
    look-alikes) is searched again, twice as deep, until the tie fits or the pool is done."""
    n, count = len(q), pool.count
    out_d, out_i = np.full((n, m), -np.inf, dtype=np.float32), np.full((n, m), -1, dtype=np.int64)
    rows = [np.array([pool.row_of[x] for x in b if x in pool.row_of], dtype=np.int64) for b in banned]
    pending = np.arange(n)
    # One more than the cut needs: the last one fetched shows whether a tie goes past the cut.
    k = min(count, m + 1 + max((len(r) for r in rows), default=0))
    while len(pending) and k > 0:
        d, i = pool.index.search(np.ascontiguousarray(q[pending]), k)
        ok = i >= 0
        skip = np.concatenate([r * count + rows[r] for r in pending])
        if len(skip):
            ok &= ~np.isin(pending[:, None] * count + i, skip)
        dm = np.where(ok, d, -np.inf).astype(np.float32)
        order = np.lexsort((np.where(ok, i, count), -dm))[:, :m]
        kept_d, kept_i = np.take_along_axis(dm, order, 1), np.take_along_axis(np.where(ok, i, -1), order, 1)
        if k >= count:  # the whole pool was fetched: nothing to leave out
            done = np.ones(len(pending), dtype=bool)
        else:
            whole = kept_d > d[:, -1:]  # above the last fetched: no tie left out of the fetch
            kept_d, kept_i = np.where(whole, kept_d, -np.inf), np.where(whole, kept_i, -1)
            done = whole.sum(axis=1) >= (m + 1) // 2
        out_d[pending[done], :kept_d.shape[1]] = kept_d[done]
        out_i[pending[done], :kept_i.shape[1]] = kept_i[done]
        pending, k = pending[~done], min(count, 2 * k)
    return out_d, out_i


def best_compatible(users: list, pools: list, cmap: CompatibilityMap, codes: dict, retrieve: int, keep: int,
                    excluded: list | None = None, noise: float = 0.0, seed: int = 0) -> list:
    """[(user_id, rank, profile_id, score)], ranks 1..keep per user, best first.

    users:    dicts with ``id`` and the pair fields (``plain_pair_fields``)
    pools:    the Pools this group of users may match (disjoint), encoded with ``codes``
    excluded: per user, ids never to return (the user is always left out)
    score:    compatibility (``cmap.weights``) + noise x a standard normal draw of (seed, user,
              profile); the candidates are the ``retrieve`` best by phi over all the pools, ties by id.
    """
    if not users or not pools:
        return []
    n = len(users)
    banned = [{u["id"]} | set((excluded[r] if excluded else None) or ()) for r, u in enumerate(users)]
    q = query_vectors(cmap, users)
    found = [_retrieve(p, q, banned, retrieve) for p in pools]
    # The best `retrieve` over all pools by phi, ties by id: [n, retrieve] each.
    d = np.concatenate([f[0] for f in found], axis=1)
    row = np.concatenate([f[1] for f in found], axis=1)
    src = np.concatenate([np.full(f[1].shape, s, dtype=np.int64) for s, f in enumerate(found)], axis=1)
    ids = np.concatenate([np.where(f[1] >= 0, p.ids[np.maximum(f[1], 0)], "") for p, f in zip(pools, found)], axis=1)
    top = np.lexsort((ids, -d))[:, :retrieve]
    d, row, src, ids = (np.take_along_axis(a, top, 1) for a in (d, row, src, ids))
    # The exact score of every retrieved pair, pool by pool.
    score = np.full(d.shape, -np.inf)
    mine = encode(users, codes)
    user = np.broadcast_to(np.arange(n)[:, None], d.shape)
    for s, pool in enumerate(pools):
        at = (src == s) & (row >= 0)
        if not at.any():
            continue
        exact = compatibility_pairs(mine, user[at], pool.profiles, row[at], cmap.weights)
        if noise:
            exact = exact + noise * gaussian_noise(seed, [users[r]["id"] for r in user[at]], pool.keys[row[at]])
        score[at] = exact
    best = np.lexsort((ids, -score))[:, :keep]
    score, ids = np.take_along_axis(score, best, 1), np.take_along_axis(ids, best, 1)
    return [(users[r]["id"], j + 1, str(ids[r, j]), float(score[r, j]))
            for r in range(n) for j in range(best.shape[1]) if score[r, j] > -np.inf]


# --- on Spark -----------------------------------------------------------------------
_WORKER: dict = {"folder": None, "codes": {}, "pools": {}}  # one search's pools, loaded once per Python worker


def _cached_pools(folder: str, entries: list) -> tuple:
    """(the Pools of ``entries``, the codes they are encoded with); an earlier search's pools are dropped."""
    if _WORKER["folder"] != folder:
        _WORKER.update(folder=folder, codes={}, pools={})
    cache, codes = _WORKER["pools"], _WORKER["codes"]
    for e in entries:
        if e["file"] not in cache:
            cache[e["file"]] = load_pool(folder, e, codes)
    return [cache[e["file"]] for e in entries], codes


def load_pool(folder: str, entry: dict, codes: dict) -> Pool:
    import faiss
    import pandas as pd
    side = pd.read_parquet(os.path.join(folder, entry["rows_file"]))
    index = faiss.read_index(os.path.join(folder, entry["file"]))
    if entry.get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = int(entry["nprobe"])
    return _pool(index, side["id"].tolist(), encode([json.loads(s) for s in side["pair"]], codes))


def _build_pool(folder: str, cmap: CompatibilityMap, ivf_min_pool: int):
    """applyInPandas function: the profiles of one pool -> its files and a summary row."""
    def build(pdf):
        import faiss
        import pandas as pd
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        gender, seeks = str(pdf["g"].iloc[0]), str(pdf["seeks"].iloc[0])
        pdf = pdf.sort_values("id", kind="stable")
        rows = [plain_pair_fields(r) for r in pdf.to_dict("records")]
        x = profile_vectors(cmap, rows)
        index = make_index(x, ivf_min_pool)
        name = "pool-" + hashlib.sha1(f"{gender}#{seeks}".encode()).hexdigest()[:16]
        faiss.write_index(index, os.path.join(folder, name + ".faiss"))
        pd.DataFrame({"id": pdf["id"].tolist(), "pair": [json.dumps(r, sort_keys=True) for r in rows]}) \
            .to_parquet(os.path.join(folder, name + ".parquet"), index=False)
        nprobe = index.nprobe if hasattr(index, "nprobe") else 0
        return pd.DataFrame([{"gender": gender, "seeks": seeks, "count": len(pdf), "file": name + ".faiss",
                              "rows_file": name + ".parquet", "nprobe": int(nprobe)}])
    return build


@dataclass
class CompatibilitySearch:
    folder: str  # the pool files (scratch: remove it when done)
    pools: list  # manifest entries: gender, seeks (list), count, file, rows_file, nprobe
    gender_filter: bool
    cmap: CompatibilityMap

    @classmethod
    def build(cls, people, weights: dict, scratch: str, gender_filter: bool, ivf_min_pool: int):
        """Pools of ``people`` (``pair_people``, the profiles that may be matched) written under
        a new folder in ``scratch``; one Spark job for the vocabularies, one for the pools."""
        from pyspark.sql import functions as F
        from lib.index import seeks_key_col
        cmap = fit_map(people, weights)
        folder = os.path.join(scratch, f"compatibility-{uuid.uuid4().hex[:8]}")  # new: workers cache by path
        os.makedirs(folder, exist_ok=True)
        rows = people.select("id", (F.col("gender") if gender_filter else F.lit("all")).alias("g"),
                             seeks_key_col(gender_filter).alias("seeks"), *PAIR_FIELDS)
        summary = (rows.groupBy("g", "seeks")
                   .applyInPandas(_build_pool(folder, cmap, ivf_min_pool),
                                  "gender string, seeks string, count long, file string, rows_file string, "
                                  "nprobe int").collect())  # one row per pool
        pools = [{**r.asDict(), "seeks": r["seeks"].split("|")} for r in sorted(summary, key=lambda r: r["file"])]
        return cls(folder, pools, gender_filter, cmap)

    def close(self) -> None:
        """Remove the pool files, and the scratch folder when nothing else is left in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(self.folder))
        except OSError:
            pass

    def best(self, users, retrieve: int, keep: int, noise: float = 0.0, seed: int = 0, batch: int = 1024):
        """DataFrame of SCORED_DDL: ``best_compatible`` for every row of ``users`` (user_id,
        gender, looking_for, the pair fields and optionally ``excluded``: array of ids)."""
        import pandas as pd
        from lib.match import shards_for
        folder, entries, gf, cmap = self.folder, self.pools, self.gender_filter, self.cmap
        has_excluded = "excluded" in users.columns
        users = users.select("user_id", "gender", "looking_for", *PAIR_FIELDS,
                             *(["excluded"] if has_excluded else []))

        def apply(batches):
            import faiss
            faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
            for pdf in batches:
                rows = []
                for gender, lf, grp in filter_groups(pdf):
                    pools, codes = _cached_pools(folder, shards_for(entries, gender, lf, gf))
                    for start in range(0, len(grp), batch):
                        part = grp.iloc[start:start + batch]
                        people = [{"id": r["user_id"], **plain_pair_fields(r)} for r in part.to_dict("records")]
                        excl = ([set(e) if e is not None else set() for e in part["excluded"]]
                                if has_excluded else None)
                        rows += best_compatible(people, pools, cmap, codes, retrieve, keep, excl, noise, seed)
                yield pd.DataFrame(rows, columns=["user_id", "rank", "profile_id", "score"])

        return users.mapInPandas(apply, SCORED_DDL)


def filter_groups(pdf):
    """(gender, looking_for as a sorted tuple, rows) per group of users of ``pdf`` who may
    match the same people: they search the same pools."""
    keys = [(g, tuple(sorted(lf)) if lf is not None else ()) for g, lf in zip(pdf["gender"], pdf["looking_for"])]
    for (gender, lf), grp in pdf.assign(_key=keys).groupby("_key", sort=False):
        yield gender, lf, grp.drop(columns="_key")
