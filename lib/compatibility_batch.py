"""The compatibility score of many pairs at once: the numpy twin of
``lib.compatibility.compatibility`` (tests keep them equal to the last bit), for rescoring a
few hundred candidates for each of a batch of users on the executors, far faster than a
Python call per pair.

Profiles are first encoded as arrays (``encode``): every value becomes an integer code from
one ``codes`` dict shared by everything that is compared, so equal values get equal codes
and different values never share one. Sets are kept flat with offsets (a profile with
hundreds of genres costs its own length, not everyone's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.compatibility_map import CATEGORICAL, SETS


@dataclass
class Encoded:
    """``n`` profiles as arrays. Sets (interests, genres, attribute keys, attribute
    ``(key, value)`` items): ``flat[field]`` int64 codes, each profile's unique values
    ``flat[field][off[field][i]:off[field][i + 1]]``."""
    cat: np.ndarray  # [n, len(CATEGORICAL)] int64 codes, -1 where missing
    age: np.ndarray  # [n] float64, nan where missing
    flat: dict  # field -> [total] int64
    off: dict  # field -> [n + 1] int64

    def __len__(self) -> int:
        return len(self.age)


SET_FIELDS = tuple(f for f, _ in SETS) + ("attribute_keys", "attribute_items")


def _code(codes: dict, value) -> int:
    c = codes.get(value)
    if c is None:
        c = codes[value] = len(codes)
    return c


def encode(rows: list, codes: dict) -> Encoded:
    """``rows``: dicts of pair fields (``lib.compatibility_map.plain_pair_fields``)."""
    n = len(rows)
    cat = np.full((n, len(CATEGORICAL)), -1, dtype=np.int64)
    age = np.full(n, np.nan)
    values = {f: [] for f in SET_FIELDS}
    for r, row in enumerate(rows):
        for j, (f, _) in enumerate(CATEGORICAL):
            if row.get(f) is not None:
                cat[r, j] = _code(codes, (f, row[f]))
        if row.get("age") is not None:
            age[r] = row["age"]
        for f, _ in SETS:
            values[f].append({_code(codes, (f, v)) for v in (row.get(f) or ())})
        attrs = row.get("attributes") or {}
        values["attribute_keys"].append({_code(codes, ("attribute", k)) for k in attrs})
        values["attribute_items"].append({_code(codes, ("attribute", k, v)) for k, v in attrs.items()})
    flat, off = {}, {}
    for f, sets in values.items():
        off[f] = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
        flat[f] = np.fromiter((c for s in sets for c in s), dtype=np.int64, count=int(off[f][-1]))
    return Encoded(cat, age, flat, off)


def _overlap(u: Encoded, ui: np.ndarray, p: Encoded, pj: np.ndarray, field: str):
    """(|U & P|, |U|, |P|) per pair: the set ``field`` of user ui[k] of ``u`` and of profile pj[k] of ``p``."""
    u_sizes = u.off[field][ui + 1] - u.off[field][ui]
    starts, sizes = p.off[field][pj], p.off[field][pj + 1] - p.off[field][pj]
    inter = np.zeros(len(pj), dtype=np.int64)
    total = int(sizes.sum())
    if total and len(u.flat[field]):
        # Every value of every pair's profile, tagged with the pair's user: (user, code) keys
        # looked up among the users' own (user, code) keys.
        pair = np.repeat(np.arange(len(pj)), sizes)
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(total)
        width = int(max(u.flat[field].max(), p.flat[field].max())) + 1
        mine = np.repeat(np.arange(len(u)), np.diff(u.off[field])) * width + u.flat[field]
        hits = np.isin(ui[pair] * width + p.flat[field][pos], mine)
        inter = np.bincount(pair, weights=hits, minlength=len(pj)).astype(np.int64)
    return inter, u_sizes, sizes


def compatibility_pairs(u: Encoded, ui, p: Encoded, pj, w: dict) -> np.ndarray:
    """[len(pj)] float64: ``compatibility(user ui[k] of u, profile pj[k] of p, w)`` for each
    k, with the same operations in the same order (so the same floats)."""
    ui, pj = np.asarray(ui, dtype=np.int64), np.asarray(pj, dtype=np.int64)
    names = {f: j for j, (f, _) in enumerate(CATEGORICAL)}

    def same(f):
        a, b = u.cat[ui, names[f]], p.cat[pj, names[f]]
        return np.where((a == b) & (a >= 0), 1.0, 0.0)

    def jaccard(field):
        inter, a, b = _overlap(u, ui, p, pj, field)
        union = a + b - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)

    s = w["group"] * same("group_id")
    s = s + w["interests"] * jaccard("interests")
    s = s + w["genres"] * jaccard("genres")
    gap = np.abs(u.age[ui] - p.age[pj]) / 10.0
    s = np.where(np.isnan(gap), s, s - w["age"] * np.minimum(np.nan_to_num(gap), 2.0))
    s = s + w["goal"] * same("relationship_goal")
    s = s + w["education"] * same("education_level")
    s = s + w["drinking"] * same("drinking_habits")
    s = s + w["smoking"] * same("smoking_habits")
    common = _overlap(u, ui, p, pj, "attribute_keys")[0]
    equal = _overlap(u, ui, p, pj, "attribute_items")[0]
    return np.where(common > 0, s + w["attributes"] * equal / np.maximum(common, 1), s)
