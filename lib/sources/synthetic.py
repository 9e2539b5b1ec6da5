"""Synthetic profiles from archetype groups: the cold start before any real user exists.

Every profile is drawn from its own random stream seeded by (seed, row number), so the
output is identical for the same seed whatever the number of partitions or executors.
Generation runs on the executors (``mapInPandas`` over ``spark.range``).
"""
from __future__ import annotations

import datetime as dt
import numpy as np

from lib.config import read_yaml
from lib.errors import UserError
from lib.ids import stable_uuid

# created_at of synthetic profiles counts back from this fixed day (reproducible, not now()).
EPOCH = dt.datetime(2026, 11, 1)

_DIST_KEYS = ("gender", "orientation", "relationship_goal", "drinking_habits", "smoking_habits",
              "education_level")


def load_archetypes(path: str) -> dict:
    """Read and check the archetype file; returns {'defaults': {...}, 'archetypes': {...}}."""
    spec = read_yaml(path, "archetype file", "set source.archetypes_file") or {}
    if not isinstance(spec, dict):
        raise UserError(f"archetype file {path!r} must be a mapping with 'defaults' and 'archetypes'")
    groups = spec.get("archetypes") or {}
    if not isinstance(groups, dict) or not groups:
        raise UserError(f"archetype file {path!r} defines no archetypes")
    defaults = spec.get("defaults") or {}
    for name, g in groups.items():
        for key in ("interests", "genres", "age"):
            if key not in g:
                raise UserError(f"archetype {name!r} in {path!r} has no {key!r}")
    if not defaults.get("cities"):
        raise UserError(f"archetype file {path!r} has no defaults.cities")
    return {"defaults": defaults, "archetypes": groups}


def _weights(dist: dict):
    """(keys, cumulative weights) of a {value: weight} mapping, cached by identity: the
    generator draws from the same few mappings millions of times."""
    key = id(dist)
    hit = _WEIGHTS.get(key)
    if hit is None or hit[0] is not dist:
        keys = list(dist)
        w = np.asarray([float(dist[k]) for k in keys])
        hit = _WEIGHTS[key] = (dist, keys, np.cumsum(w / w.sum()), np.log(w))
    return hit[1], hit[2], hit[3]


_WEIGHTS: dict = {}


def _pick(rng: np.random.Generator, dist: dict):
    keys, cum, _ = _weights(dist)
    return keys[min(int(np.searchsorted(cum, rng.random(), side="right")), len(keys) - 1)]


def _pick_many(rng: np.random.Generator, dist: dict, k: int) -> list:
    """``k`` distinct values drawn by weight without replacement (Gumbel top-k), in key order."""
    keys, _, logw = _weights(dist)
    k = min(k, len(keys))
    scores = logw - np.log(-np.log(rng.random(len(keys))))
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
    return [keys[i] for i in sorted(idx)]


def generate_profile(i: int, seed: int, spec: dict) -> dict:
    """Profile number ``i`` (a dict in the profiles schema plus ``music``: [(genre, artist)])."""
    rng = np.random.default_rng([seed, i])
    d, groups = spec["defaults"], spec["archetypes"]
    group = _pick(rng, spec.setdefault("_group_weights", {name: g.get("weight", 1.0) for name, g in groups.items()}))
    g = groups[group]

    def dist(key):
        return g.get(key, d.get(key))

    gender = _pick(rng, dist("gender"))
    orientation = _pick(rng, dist("orientation"))
    if orientation == "lesbian" and gender != "female":
        orientation = "gay"
    age = int(np.clip(round(rng.normal(g["age"]["mean"], g["age"]["sd"])), 18, 80))
    interests = _pick_many(rng, g["interests"], int(rng.integers(3, 7)))
    # A little noise outside the group: a shared interest across groups happens.
    if rng.random() < 0.3:
        others = spec.setdefault("_others", {})
        if group not in others:
            others[group] = {n: 1.0 for n in groups if n != group} or {group: 1.0}
        other = groups[_pick(rng, others[group])]
        extra = _pick(rng, other["interests"])
        if extra not in interests:
            interests.append(extra)
    genres = _pick_many(rng, g["genres"], int(rng.integers(2, 5)))
    music = [(genre, f"{genre} artist {int(rng.integers(1, 21))}") for genre in genres
             for _ in range(int(rng.integers(1, 3)))]
    city = d["cities"][int(rng.integers(len(d["cities"])))]
    mean_height = {"male": 178.0, "female": 165.0}.get(gender, 171.0)
    pid = stable_uuid(f"synthetic:{seed}:{i}")
    created = EPOCH - dt.timedelta(days=int(rng.integers(0, 720)), seconds=int(rng.integers(0, 86400)))
    return {
        "id": pid,
        "created_at": created,
        "name": f"Synthetic User {i}",
        "avatar_url": f"https://example.invalid/avatars/{pid}.jpg",
        "setup_complete": bool(rng.random() < float(d.get("setup_complete", 1.0))),
        "age": age,
        "gender": gender,
        "sexual_orientation": orientation,
        "location": city["name"],
        "region": city.get("region"),
        "latitude": float(city["lat"]) + float(rng.normal(0, 0.05)),
        "longitude": float(city["lon"]) + float(rng.normal(0, 0.05)),
        "bio": f"Into {', '.join(interests)}.",
        "interests": interests,
        "relationship_goal": _pick(rng, dist("relationship_goal")),
        "education_level": _pick(rng, dist("education_level")),
        "job_title": str(g["jobs"][int(rng.integers(len(g["jobs"])))]) if g.get("jobs") else None,
        "height": round(float(rng.normal(mean_height, 7.0)), 1),
        "drinking_habits": _pick(rng, dist("drinking_habits")),
        "smoking_habits": _pick(rng, dist("smoking_habits")),
        "group_id": group,
        "banned": bool(rng.random() < float(d.get("banned", 0.0))),
        "deleted_at": (EPOCH if rng.random() < float(d.get("deleted", 0.0)) else None),
        "music": music,
        **_settings(seed, i, age, d.get("settings") or {}),
    }


def _settings(seed: int, i: int, age: int, spec: dict) -> dict:
    """The match settings of profile ``i``: an age range and a maximum distance, each set by
    a share of people. Their own random stream, so the rest of the profile is unchanged."""
    rng = np.random.default_rng([seed, i, 1])
    out = {"age_min": None, "age_max": None, "max_distance_km": None}
    if rng.random() < float(spec.get("age_range", 0.0)):
        below, above = spec.get("age_below", [2, 10]), spec.get("age_above", [3, 15])
        out["age_min"] = max(18, age - int(rng.integers(below[0], below[1] + 1)))
        out["age_max"] = min(100, age + int(rng.integers(above[0], above[1] + 1)))
    if rng.random() < float(spec.get("max_distance", 0.0)):
        lo, hi = spec.get("max_distance_km", [50, 800])
        out["max_distance_km"] = float(round(rng.uniform(lo, hi)))
    return out


_GEN_DDL = (
    "id string, created_at timestamp, name string, avatar_url string, setup_complete boolean, "
    "age int, gender string, sexual_orientation string, location string, region string, latitude double, "
    "longitude double, bio string, interests array<string>, relationship_goal string, "
    "education_level string, job_title string, height double, drinking_habits string, "
    "smoking_habits string, group_id string, banned boolean, deleted_at timestamp, "
    "age_min int, age_max int, max_distance_km double, music array<struct<genre:string,artist_name:string>>"
)


def synthetic_profiles(spark, n: int, seed: int, spec: dict):
    """DataFrame of ``n`` generated profiles (with a nested ``music`` column), made on executors."""
    import pandas as pd

    def gen(batches):
        for b in batches:
            rows = [generate_profile(int(i), seed, spec) for i in b["id"]]
            for r in rows:
                r["music"] = [{"genre": x, "artist_name": y} for x, y in r["music"]]
            yield pd.DataFrame(rows, columns=[c.split(" ")[0] for c in _ddl_names()])

    parts = max(1, min(200, n // 20000 + spark.sparkContext.defaultParallelism))
    return spark.range(0, n, numPartitions=parts).mapInPandas(gen, _GEN_DDL)


def _ddl_names() -> list[str]:
    from lib.schema import _split_ddl
    return [c.strip() for c in _split_ddl(_GEN_DDL)]


def synthetic_rows(spark, src):
    """The generator's profiles and music preferences as the SourceRows of the ingest."""
    from pyspark.sql import functions as F
    from lib.ids import stable_uuid_col
    from lib.sources import SourceRows
    from pyspark import StorageLevel
    # Generated once: profiles and their music preferences are both cut from it.
    gen = synthetic_profiles(spark, src.num_profiles, src.seed, load_archetypes(src.archetypes_file)) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    music = (gen.select(F.col("id").alias("user_id"), "created_at", F.posexplode("music").alias("j", "m"))
             .select(stable_uuid_col(F.concat_ws(":", F.col("user_id"), F.lit("music"), F.col("j"))).alias("id"),
                     "created_at", "user_id", F.col("m.genre").alias("genre"),
                     F.col("m.artist_name").alias("artist_name"), F.lit(0).cast("long").alias("_pos")))
    profiles = (gen.drop("music").withColumn("_age_raw", F.col("age").cast("string"))
                .withColumn("_corrupt_record", F.lit(None).cast("string"))
                .withColumn("_pos", F.monotonically_increasing_id()))
    return SourceRows(profiles=profiles, music=music, cached=[gen])
