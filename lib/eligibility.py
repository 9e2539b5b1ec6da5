"""Who takes part in matching at all, and the pairs that must never be shown."""
from __future__ import annotations


def active_profiles(profiles):
    """Profiles that may be matched and may receive matches: set up, not deleted, not banned."""
    from pyspark.sql import functions as F
    return profiles.where(F.coalesce(F.col("setup_complete"), F.lit(False))
                          & F.col("deleted_at").isNull()
                          & ~F.coalesce(F.col("banned"), F.lit(False)))


def blocked_pairs(interactions):
    """(user_id, profile_id) pairs with a block in either direction (whatever the split)."""
    from pyspark.sql import functions as F
    blocks = interactions.where(F.col("event") == "block")
    return (blocks.select("user_id", "profile_id")
            .unionByName(blocks.select(F.col("profile_id").alias("user_id"), F.col("user_id").alias("profile_id")))
            .distinct())


def excluded_pairs(interactions, distinct: bool = True):
    """(user_id, profile_id) pairs never to recommend: everything the user acted on in the
    training split, and every block in either direction. ``distinct=False`` leaves repeats
    (a like then a match) for a caller that dedupes as it aggregates: one shuffle less."""
    from pyspark.sql import functions as F
    acted = interactions.where(F.col("split") == "train").select("user_id", "profile_id")
    pairs = acted.unionByName(blocked_pairs(interactions))
    return pairs.distinct() if distinct else pairs


def as_side(people, key: str, prefix: str):
    """``people`` (id and attribute columns) as one side of a pair: ``id`` renamed ``key``,
    every other column prefixed (``u_``/``p_``), as ``settings_allow`` reads them."""
    from pyspark.sql import functions as F
    return people.select(F.col("id").alias(key), *[F.col(c).alias(prefix + c) for c in people.columns if c != "id"])


def settings_allow(u: str, p: str):
    """Spark Column over columns ``{u}age``, ``{u}age_min``, ... and the same with ``p``:
    each side is within the other's age range and the distance within the smaller of their
    maximum distances, where set. Unknown ages or coordinates fail a setting that is set.
    (The Spark twin of lib.topk.passes, used by the audit.)"""
    from pyspark.sql import functions as F

    def c(prefix, name):
        return F.col(prefix + name)

    def within(x, lo, hi):
        return (lo.isNull() | (x >= lo)) & (hi.isNull() | (x <= hi))

    limit = F.least(c(u, "max_distance_km"), c(p, "max_distance_km"))  # least() skips nulls
    return F.coalesce(within(c(p, "age"), c(u, "age_min"), c(u, "age_max"))
                      & within(c(u, "age"), c(p, "age_min"), c(p, "age_max"))
                      & (limit.isNull() | (distance_km(c(u, "latitude"), c(u, "longitude"),
                                                       c(p, "latitude"), c(p, "longitude")) <= limit)),
                      F.lit(False))


def distance_km(lat1, lon1, lat2, lon2):
    """Spark Column: great-circle distance in km (haversine, mean Earth radius)."""
    from pyspark.sql import functions as F
    a = (F.pow(F.sin(F.radians(lat2 - lat1) / 2), 2)
         + F.cos(F.radians(lat1)) * F.cos(F.radians(lat2)) * F.pow(F.sin(F.radians(lon2 - lon1) / 2), 2))
    return 2 * 6371.0088 * F.asin(F.sqrt(F.least(F.greatest(a, F.lit(0.0)), F.lit(1.0))))
