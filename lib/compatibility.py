"""The rule-based compatibility score that labels synthetic interactions (and is the oracle).

Two twins: ``compatibility`` (plain Python, one pair) and ``compatibility_col`` (Spark
Column over columns prefixed ``u_`` and ``p_``). Tests keep them equal.

score = 1.0 [same archetype group] + 1.0 jaccard(interests) + 0.5 jaccard(genres)
        - 0.5 min(|age gap| / 10, 2) + 0.3 [same relationship goal] + 0.2 [same education]
        + 0.15 [same drinking] + 0.15 [same smoking] + 0.6 share of equal extra attributes
"""
from __future__ import annotations

import math

W_GROUP, W_INTERESTS, W_GENRES, W_AGE, W_GOAL, W_EDU, W_DRINK, W_SMOKE, W_ATTR = (
    1.0, 1.0, 0.5, 0.5, 0.3, 0.2, 0.15, 0.15, 0.6)
PAIR_FIELDS = ("group_id", "interests", "genres", "age", "relationship_goal", "education_level",
               "drinking_habits", "smoking_habits", "attributes")


def _jaccard(a, b) -> float:
    a, b = set(a or ()), set(b or ())
    return len(a & b) / len(a | b) if a | b else 0.0


def _same(a, b) -> float:
    return 1.0 if a is not None and a == b else 0.0


def compatibility(u: dict, p: dict) -> float:
    """Score of the pair (symmetric); fields as in ``PAIR_FIELDS``, any may be None."""
    s = W_GROUP * _same(u.get("group_id"), p.get("group_id"))
    s += W_INTERESTS * _jaccard(u.get("interests"), p.get("interests"))
    s += W_GENRES * _jaccard(u.get("genres"), p.get("genres"))
    if u.get("age") is not None and p.get("age") is not None:
        s -= W_AGE * min(abs(u["age"] - p["age"]) / 10.0, 2.0)
    s += W_GOAL * _same(u.get("relationship_goal"), p.get("relationship_goal"))
    s += W_EDU * _same(u.get("education_level"), p.get("education_level"))
    s += W_DRINK * _same(u.get("drinking_habits"), p.get("drinking_habits"))
    s += W_SMOKE * _same(u.get("smoking_habits"), p.get("smoking_habits"))
    ua, pa = u.get("attributes") or {}, p.get("attributes") or {}
    common = set(ua) & set(pa)
    if common:
        s += W_ATTR * sum(ua[k] == pa[k] for k in common) / len(common)
    return s


def compatibility_col():
    """Spark Column twin of ``compatibility`` over ``u_<field>`` and ``p_<field>`` columns."""
    from pyspark.sql import functions as F

    def same(f):
        return F.coalesce((F.col(f"u_{f}") == F.col(f"p_{f}")).cast("double"), F.lit(0.0))

    def jaccard(f):
        a = F.coalesce(F.col(f"u_{f}"), F.array().cast("array<string>"))
        b = F.coalesce(F.col(f"p_{f}"), F.array().cast("array<string>"))
        union = F.size(F.array_union(a, b))
        return F.when(union > 0, F.size(F.array_intersect(a, b)) / union).otherwise(F.lit(0.0))

    ua = F.coalesce(F.col("u_attributes"), F.create_map().cast("map<string,string>"))
    pa = F.coalesce(F.col("p_attributes"), F.create_map().cast("map<string,string>"))
    common = F.array_intersect(F.map_keys(ua), F.map_keys(pa))
    equal = F.size(F.filter(common, lambda k: F.element_at(ua, k) == F.element_at(pa, k)))
    attr = F.when(F.size(common) > 0, equal / F.size(common)).otherwise(F.lit(0.0))
    # least() skips nulls, so a missing age must be handled before it.
    gap = F.abs(F.col("u_age") - F.col("p_age")) / 10.0
    age = F.when(gap.isNotNull(), F.least(gap, F.lit(2.0))).otherwise(F.lit(0.0))
    return (W_GROUP * same("group_id") + W_INTERESTS * jaccard("interests") + W_GENRES * jaccard("genres")
            - W_AGE * age + W_GOAL * same("relationship_goal") + W_EDU * same("education_level")
            + W_DRINK * same("drinking_habits") + W_SMOKE * same("smoking_habits") + W_ATTR * attr)


def gaussian_noise_col(seed: int, *cols):
    """Spark Column: a standard normal draw that depends only on (seed, cols) (Box-Muller)."""
    from pyspark.sql import functions as F
    m = float(2 ** 31)
    u1 = (F.pmod(F.xxhash64(F.lit(seed), F.lit("n1"), *cols), F.lit(2 ** 31)) + 1) / (m + 1)
    u2 = (F.pmod(F.xxhash64(F.lit(seed), F.lit("n2"), *cols), F.lit(2 ** 31)) + 1) / (m + 1)
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2 * math.pi * u2)
