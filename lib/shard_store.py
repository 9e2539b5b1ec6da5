"""The files of one FAISS shard, written by ``index`` and read by ``match`` and ``evaluate``.

A shard is a group of profiles who could match the same users (see lib.index). Per shard:

- ``shard-NNNNN.faiss``: the FAISS index over their profile-tower embeddings (flat, IVF or
  HNSW, chosen by size);
- ``shard-NNNNN.vectors.npy``: the same embeddings, row for row: exact rescoring and the
  exact search of users whose filters leave the approximate search short;
- ``shard-NNNNN.user_vectors.npy``: their user-tower embeddings: how much *they* would like
  someone, for the reciprocal score;
- ``shard-NNNNN.meta.parquet``: per row the profile id, popularity (training positives
  received) and what the filters need: age, age range, maximum distance, coordinates.

The manifest lists every file with its sha-256; ``load_shard`` checks them, so a shard
copied half-way or edited by hand is refused instead of serving wrong matches.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from lib.errors import UserError

META_COLUMNS = ("profile_id", "popularity", "age", "age_min", "age_max", "max_distance_km", "latitude", "longitude")
# Profile attributes the filters read, as float64 with NaN for "not set".
ATTRIBUTES = ("age", "age_min", "age_max", "max_distance_km", "latitude", "longitude")


@dataclass
class Shard:
    index: object  # faiss.Index over the profile embeddings
    ids: np.ndarray  # [n] object: profile ids, row i of the index
    popularity: np.ndarray  # [n] int64
    attrs: dict  # name -> [n] float64 (NaN: not set), see ATTRIBUTES
    vectors: np.ndarray  # [n, d] float32 profile embeddings (memory-mapped)
    user_vectors: np.ndarray | None  # [n, d] float32 user-tower embeddings of the same people
    entry: dict  # its manifest entry

    @property
    def count(self) -> int:
        return len(self.ids)


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest 4 x sqrt(n), with at least 39
    training points per list (FAISS's floor for k-means) and at least one list."""
    target = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n < 39 * nlist:
        nlist //= 2
    return max(1, nlist)


def choose_type(count: int, cfg_index) -> str:
    """The index type of a shard of ``count`` profiles (``index.type``; auto: by size)."""
    if cfg_index.type != "auto":
        return cfg_index.type
    return "flat" if count <= cfg_index.flat_max else "ivf"


def build_index(x: np.ndarray, kind: str, cfg_index, seed: int = 1234):
    """FAISS index of unit-length rows ``x`` (inner product = cosine), and its parameters."""
    import faiss
    d = x.shape[1]
    if kind == "flat":
        index, params = faiss.IndexFlatIP(d), {}
    elif kind == "ivf":
        nlist = min(cfg_index.ivf_nlist or ivf_nlist(len(x)), len(x))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # same vectors, same lists
        # k-means on a sample is as good as on everything past ~256 points a list.
        sample = x if len(x) <= 256 * nlist else x[np.random.default_rng(seed).choice(len(x), 256 * nlist, replace=False)]
        index.train(sample)
        params = {"nlist": nlist, "nprobe": min(cfg_index.nprobe, nlist)}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg_index.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        params = {"m": cfg_index.hnsw_m, "ef_search": cfg_index.hnsw_ef_search}
    else:
        raise ValueError(f"unknown index type {kind!r}")
    index.add(x)
    return index, params


def write_shard(out_dir: str, shard: int, pdf, kind: str, cfg_index) -> dict:
    """Write shard ``shard`` from ``pdf`` (META_COLUMNS, ``embedding``, ``user_embedding``)
    and return its manifest entry (files, sha-256s, count, type, parameters)."""
    import faiss
    pdf = pdf.sort_values("profile_id", kind="stable").reset_index(drop=True)  # same input, same files
    x = np.ascontiguousarray(np.stack(pdf["embedding"].values).astype(np.float32))
    index, params = build_index(x, kind, cfg_index)
    name = f"shard-{shard:05d}"
    files = {"file": name + ".faiss", "vectors_file": name + ".vectors.npy",
             "user_vectors_file": name + ".user_vectors.npy", "meta_file": name + ".meta.parquet"}
    faiss.write_index(index, os.path.join(out_dir, files["file"]))
    np.save(os.path.join(out_dir, files["vectors_file"]), x)
    u = pdf["user_embedding"]
    uv = np.stack([v if v is not None else np.zeros(x.shape[1], np.float32) for v in u.values]).astype(np.float32)
    np.save(os.path.join(out_dir, files["user_vectors_file"]), np.ascontiguousarray(uv))
    meta = pdf[list(META_COLUMNS)].copy()
    meta["row"] = np.arange(len(meta), dtype=np.int64)
    meta["shard"] = shard
    meta.to_parquet(os.path.join(out_dir, files["meta_file"]), index=False)
    sums = {f: sha256_file(os.path.join(out_dir, files[f])) for f in files}
    return {"shard": shard, "count": len(pdf), "type": kind, "params": params, **files,
            "sha256": sums, "missing_user_vectors": int(u.isna().sum())}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(index_dir: str, entry: dict) -> None:
    """Refuse a shard whose files are missing or differ from the manifest's sha-256s."""
    for key, want in entry["sha256"].items():
        path = os.path.join(index_dir, str(entry.get(key)))
        if not os.path.exists(path) or sha256_file(path) != want:
            raise UserError(f"index file {path} is missing or differs from its manifest "
                            "(copied half-way or changed?); run 'index' again")


def load_shard(index_dir: str, entry: dict, verify: bool = True) -> Shard:
    """A shard's files, checked against the manifest's sha-256s (again: each worker reads
    them itself, on a cluster from shared storage)."""
    import faiss
    import pandas as pd
    if verify:
        verify_files(index_dir, entry)
    index = faiss.read_index(os.path.join(index_dir, entry["file"]))
    params = entry.get("params") or {}
    if entry["type"] == "ivf":
        index.nprobe = params["nprobe"]
    elif entry["type"] == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    meta = pd.read_parquet(os.path.join(index_dir, entry["meta_file"]))
    attrs = {a: meta[a].to_numpy(dtype=np.float64, na_value=np.nan) for a in ATTRIBUTES}
    return Shard(index=index, ids=meta["profile_id"].to_numpy(dtype=object),
                 popularity=meta["popularity"].to_numpy(dtype=np.int64), attrs=attrs,
                 vectors=np.load(os.path.join(index_dir, entry["vectors_file"]), mmap_mode="r"),
                 user_vectors=np.load(os.path.join(index_dir, entry["user_vectors_file"]), mmap_mode="r"),
                 entry=entry)
