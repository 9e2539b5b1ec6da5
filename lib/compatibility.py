"""The rule-based compatibility score that labels synthetic interactions (and is the oracle).

Twins: ``compatibility`` (plain Python, one pair), ``compatibility_col`` (Spark Column over
columns prefixed ``u_`` and ``p_``) and ``lib.compatibility_batch.compatibility_pairs``
(numpy, many pairs at once). Tests keep them equal.

score = w.group [same archetype group] + w.interests jaccard(interests) + w.genres jaccard(genres)
        - w.age min(|age gap| / 10, 2) + w.goal [same relationship goal] + w.education [same education]
        + w.drinking [same drinking] + w.smoking [same smoking] + w.attributes share of equal extra attributes

The weights live in the archetype file (``compatibility:``), beside the groups they judge;
``DEFAULT_WEIGHTS`` apply to any weight it does not set.
"""
from __future__ import annotations

import math

from lib.errors import UserError

DEFAULT_WEIGHTS = {"group": 1.0, "interests": 1.0, "genres": 0.5, "age": 0.5, "goal": 0.3, "education": 0.2,
                   "drinking": 0.15, "smoking": 0.15, "attributes": 0.6}


def weights(spec: dict | None = None) -> dict:
    """The weights of an archetype file's ``compatibility:`` section over the defaults."""
    given = (spec or {}).get("compatibility") or {}
    if not isinstance(given, dict):
        raise UserError("compatibility: in the archetype file must map weight names to numbers")
    unknown = sorted(set(given) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise UserError(f"unknown compatibility weight(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_WEIGHTS)}")
    out = dict(DEFAULT_WEIGHTS)
    for k, v in given.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"compatibility weight {k!r} must be a number, got {v!r}")
        out[k] = float(v)
    return out
PAIR_FIELDS = ("group_id", "interests", "genres", "age", "relationship_goal", "education_level",
               "drinking_habits", "smoking_habits", "attributes")


def _jaccard(a, b) -> float:
    a, b = set(a or ()), set(b or ())
    return len(a & b) / len(a | b) if a | b else 0.0


def _same(a, b) -> float:
    return 1.0 if a is not None and a == b else 0.0


def compatibility(u: dict, p: dict, w: dict = DEFAULT_WEIGHTS) -> float:
    """Score of the pair (symmetric); fields as in ``PAIR_FIELDS``, any may be None."""
    s = w["group"] * _same(u.get("group_id"), p.get("group_id"))
    s += w["interests"] * _jaccard(u.get("interests"), p.get("interests"))
    s += w["genres"] * _jaccard(u.get("genres"), p.get("genres"))
    if u.get("age") is not None and p.get("age") is not None:
        s -= w["age"] * min(abs(u["age"] - p["age"]) / 10.0, 2.0)
    s += w["goal"] * _same(u.get("relationship_goal"), p.get("relationship_goal"))
    s += w["education"] * _same(u.get("education_level"), p.get("education_level"))
    s += w["drinking"] * _same(u.get("drinking_habits"), p.get("drinking_habits"))
    s += w["smoking"] * _same(u.get("smoking_habits"), p.get("smoking_habits"))
    ua, pa = u.get("attributes") or {}, p.get("attributes") or {}
    common = set(ua) & set(pa)
    if common:
        s += w["attributes"] * sum(ua[k] == pa[k] for k in common) / len(common)
    return s


def compatibility_col(w: dict = DEFAULT_WEIGHTS):
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
    return (w["group"] * same("group_id") + w["interests"] * jaccard("interests") + w["genres"] * jaccard("genres")
            - w["age"] * age + w["goal"] * same("relationship_goal") + w["education"] * same("education_level")
            + w["drinking"] * same("drinking_habits") + w["smoking"] * same("smoking_habits")
            + w["attributes"] * attr)

