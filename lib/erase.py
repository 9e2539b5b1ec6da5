"""Erasing accounts: a deleted or banned account leaves every table, then table history.

An erased id is removed from the current version of every lake table that can hold it
(one Delta MERGE ... DELETE per table and id column), so the next stages never see it and
the published matches lose it at once. Older table versions still hold it until VACUUM
removes files past ``lake.vacuum_retention_hours``; ``vacuum_lake`` runs at every ingest,
so the erased rows are gone from history one retention period after the erase at most.
"""
from __future__ import annotations

import logging

from lib import lake

log = logging.getLogger(__name__)

# table -> the columns that hold a person's id
PERSON_COLUMNS = {
    "profiles": ("id",),
    "music_preferences": ("user_id",),
    "interactions": ("user_id", "profile_id"),
    "features": ("id",),
    "user_embeddings": ("user_id",),
    "profile_embeddings": ("profile_id",),
    "matches": ("user_id", "profile_id"),
}

# Delta refuses a retention under this unless its safety check is turned off.
DELTA_MIN_RETENTION_HOURS = 168.0


def erase_accounts(spark, lake_path: str, erased) -> dict:
    """Delete every row about the ids in ``erased`` (a DataFrame with column ``id``) from
    every lake table; returns {table: rows deleted}. Tables that do not exist are skipped."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F
    ids = erased.select(F.col("id").alias("_erased_id")).distinct()
    deleted = {}
    for table, cols in PERSON_COLUMNS.items():
        if not lake.table_exists(spark, lake_path, table):
            continue
        dt = DeltaTable.forPath(spark, lake.table_path(lake_path, table))
        n = 0
        for col in cols:
            dt.alias("t").merge(ids.alias("s"), f"t.{col} = s._erased_id").whenMatchedDelete().execute()
            n += _last_deleted_rows(dt)
        deleted[table] = n
    if lake.table_exists(spark, lake_path, "quarantine"):
        # Quarantined rows name the people they are about in person_ids.
        dt = DeltaTable.forPath(spark, lake.table_path(lake_path, "quarantine"))
        dt.alias("t").merge(F.broadcast(ids).alias("s"), "array_contains(t.person_ids, s._erased_id)") \
            .whenMatchedDelete().execute()
        deleted["quarantine"] = _last_deleted_rows(dt)
    return deleted


def _last_deleted_rows(dt) -> int:
    metrics = dt.history(1).select("operationMetrics").first()[0] or {}
    return int(metrics.get("numTargetRowsDeleted", 0) or 0)


def vacuum_lake(spark, lake_path: str, retention_hours: float) -> list:
    """VACUUM every lake table: files no longer referenced by versions younger than the
    retention are deleted (so erased rows leave the history). Returns the tables vacuumed."""
    from delta.tables import DeltaTable
    conf_key = "spark.databricks.delta.retentionDurationCheck.enabled"
    short = retention_hours < DELTA_MIN_RETENTION_HOURS
    before = spark.conf.get(conf_key, "true")
    if short:
        # Asked for on purpose in config: a reader of an older version past the retention fails.
        spark.conf.set(conf_key, "false")
    out = []
    try:
        for table in lake.TABLES:
            if lake.table_exists(spark, lake_path, table):
                DeltaTable.forPath(spark, lake.table_path(lake_path, table)).vacuum(retention_hours)
                out.append(table)
    finally:
        if short:
            spark.conf.set(conf_key, before)
    return out

