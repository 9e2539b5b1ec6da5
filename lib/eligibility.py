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


def excluded_pairs(interactions):
    """(user_id, profile_id) pairs never to recommend: everything the user acted on in the
    training split, and every block in either direction."""
    from pyspark.sql import functions as F
    acted = interactions.where(F.col("split") == "train").select("user_id", "profile_id")
    return acted.unionByName(blocked_pairs(interactions)).distinct()
