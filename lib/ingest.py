"""ingest: profiles and music preferences from a source into the lake, validated, upserted by id."""
from __future__ import annotations

import logging
import shutil

from lib import lake
from lib.config import Config
from lib.errors import UserError
from lib.ids import stable_uuid_col
from lib.schema import MUSIC_DDL, PROFILES_DDL, conform, looking_for_col, looking_for_defaulted_col
from lib.validate import apply_rules, height_in_range, mark_duplicates, profile_rules, quarantine_rows

log = logging.getLogger(__name__)

# Columns whose change makes an upsert rewrite the row (not the bookkeeping ones).
_BOOKKEEPING = ("updated_at", "ingest_run_id", "content_hash")


def profile_candidates(spark, cfg: Config, run_id: str):
    """(candidate profile rows, music rows or None, keep_corrupt_text) for the configured source."""
    from pyspark.sql import functions as F
    src = cfg.source
    if src.kind == "synthetic":
        from lib.sources.synthetic import load_archetypes, synthetic_profiles
        spec = load_archetypes(src.archetypes_file)
        gen = synthetic_profiles(spark, src.num_profiles, src.seed, spec)
        music = (gen.select(F.col("id").alias("user_id"), "created_at", F.posexplode("music").alias("j", "m"))
                 .select(stable_uuid_col(F.concat_ws(":", F.col("user_id"), F.lit("music"), F.col("j"))).alias("id"),
                         "created_at", "user_id", F.col("m.genre").alias("genre"),
                         F.col("m.artist_name").alias("artist_name")))
        cands = (gen.drop("music").withColumn("_age_raw", F.col("age").cast("string"))
                 .withColumn("_corrupt_record", F.lit(None).cast("string"))
                 .withColumn("_pos", F.monotonically_increasing_id()))
        return cands, music, True
    if src.kind == "okcupid":
        from lib.sources.okcupid import read_okcupid
        raw, keep_text = read_okcupid(spark, src.path, lake.staging_dir(cfg.lake.path, run_id))
        cands = (raw.withColumn("id", stable_uuid_col(F.col("_id_name")))
                 .withColumn("age", F.when(F.col("_age_raw").rlike(r"^\s*-?\d{1,4}\s*$"),
                                           F.col("_age_raw").cast("int"))))
        return cands, None, keep_text
    raise UserError(f"source.kind {src.kind!r} is not supported")


def run(spark, cfg: Config, run_id: str) -> dict:
    from delta.tables import DeltaTable
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    src = cfg.source
    cands, music, keep_text = profile_candidates(spark, cfg, run_id)
    checked = mark_duplicates(apply_rules(cands, profile_rules(src.gender_filter)), "id", "_pos")
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r["_rule"]: r["count"] for r in checked.groupBy("_rule").count().collect()}
        total = sum(counts.values())
        if total == 0:
            raise UserError(f"source {src.kind} produced no rows; check source.path / source.num_profiles")
        quarantined = {k: v for k, v in counts.items() if k is not None}
        n_bad = sum(quarantined.values())
        if n_bad:
            bad = checked.where(F.col("_rule").isNotNull())
            lake.write_table(quarantine_rows(bad, src.kind, run_id, keep_text), cfg.lake.path, "quarantine",
                             mode="append")
        share = n_bad / total
        log.info("ingest %s: %d rows read, %d quarantined %s", src.kind, total, n_bad, quarantined)
        if share > src.max_quarantine_fraction:
            raise UserError(
                f"{n_bad} of {total} rows ({share:.1%}) failed validation, more than "
                f"source.max_quarantine_fraction={src.max_quarantine_fraction}; the rows are in the "
                f"quarantine table (run_id {run_id}); profiles were left as they were")

        good = checked.where(F.col("_rule").isNull())
        given = F.col("looking_for") if "looking_for" in good.columns else F.lit(None).cast("array<string>")
        good = (good
                .withColumn("_lf_default", looking_for_defaulted_col(F.col("gender"), F.col("sexual_orientation"), given))
                .withColumn("looking_for", looking_for_col(F.col("gender"), F.col("sexual_orientation"), given))
                .withColumn("_height_nulled", F.col("height").isNotNull() & height_in_range(F.col("height")).isNull())
                .withColumn("height", height_in_range(F.col("height")))
                .withColumn("source", F.lit(src.kind))
                .withColumn("banned", F.coalesce(F.col("banned") if "banned" in good.columns else F.lit(None), F.lit(False)))
                .withColumn("updated_at", F.current_timestamp())
                .withColumn("ingest_run_id", F.lit(run_id)))
        stats = good.agg(F.count("*").alias("n"), F.sum(F.col("_lf_default").cast("int")).alias("lf"),
                         F.sum(F.col("_height_nulled").cast("int")).alias("h")).first()
        profiles = conform(good, PROFILES_DDL)
        content = [c for c in profiles.columns if c not in _BOOKKEEPING]
        profiles = profiles.withColumn("content_hash", F.sha2(F.to_json(F.struct(*content)), 256))
        _upsert(spark, profiles, cfg.lake.path, "profiles", "id")
        n_music = 0
        if music is not None:
            music = conform(music.withColumn("source", F.lit(src.kind)).withColumn("ingest_run_id", F.lit(run_id)),
                            MUSIC_DDL)
            # Only preferences of profiles that made it in; the others were quarantined with them.
            music = music.join(good.select(F.col("id").alias("user_id")), "user_id", "left_semi")
            _upsert(spark, music, cfg.lake.path, "music_preferences", "id")
            n_music = DeltaTable.forPath(spark, lake.table_path(cfg.lake.path, "music_preferences")).toDF().count()
    finally:
        checked.unpersist()
        shutil.rmtree(lake.staging_dir(cfg.lake.path, run_id), ignore_errors=True)
    if stats["lf"]:
        log.warning("looking_for was not given and could not be derived for %d profiles: they seek everyone",
                    stats["lf"])
    if stats["h"]:
        log.warning("height outside [90, 250] cm was set to missing for %d profiles", stats["h"])
    return {"source": src.kind, "rows_read": total, "profiles_ingested": stats["n"], "quarantined": n_bad,
            "quarantined_by_rule": quarantined, "looking_for_defaulted": stats["lf"],
            "height_nulled": stats["h"], "music_preferences": n_music}


def _upsert(spark, df, lake_path: str, name: str, key: str) -> None:
    """Delta MERGE by ``key``; a row whose content did not change is left alone."""
    from delta.tables import DeltaTable
    path = lake.table_path(lake_path, name)
    if not DeltaTable.isDeltaTable(spark, path):
        lake.write_table(df, lake_path, name, mode="overwrite")
        return
    merge = DeltaTable.forPath(spark, path).alias("t").merge(df.alias("s"), f"t.{key} = s.{key}")
    if "content_hash" in df.columns:
        merge = merge.whenMatchedUpdateAll(condition="t.content_hash <> s.content_hash")
    else:
        merge = merge.whenMatchedUpdateAll()
    merge.whenNotMatchedInsertAll().execute()
