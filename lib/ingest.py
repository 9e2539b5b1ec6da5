"""ingest: profiles, music preferences and interactions from a source into the lake.

Everything is checked before any main table is written:
1. the source (``lib.sources``) gives candidate rows;
2. accounts to erase: rows that say deleted or banned, and, when the read is the whole
   source, ids of this source that the lake holds and the read no longer does;
3. every row is checked by the named rules of ``lib.validate``; a row that breaks one goes
   to quarantine with the rule, the source and the raw row (less name, avatar_url, bio);
4. when a table's quarantined share passes ``source.max_quarantine_fraction`` the job
   fails: the quarantine rows are written, the main tables are left as they were.
Then each table gets one Delta MERGE by id (a row whose content did not change is not
rewritten, so ingesting the same input twice changes nothing), erased accounts leave every
table (``lib.erase``), and VACUUM trims table history to the configured retention.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil

from lib import lake
from lib.config import Config, gender_filter_on
from lib.erase import erase_accounts, vacuum_lake
from lib.errors import UserError
from lib.schema import EVENT_LABELS, INTERACTIONS_DDL, MUSIC_DDL, PRIVATE_COLUMNS, PROFILES_DDL, conform, \
    looking_for_col, looking_for_defaulted_col, with_content_hash
from lib.sources import NO_AGE_SOURCES, read_source
from lib.validate import apply_rules, height_in_range, interaction_rules, mark_duplicates, music_rules, \
    profile_rules, quarantine_rows

log = logging.getLogger(__name__)



def run(spark, cfg: Config, run_id: str) -> dict:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    src = cfg.source
    staging = lake.staging_dir(cfg.lake.path, run_id)
    since = _previous_watermark(spark, cfg)
    persisted = []

    def keep(df):
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(df)
        return df

    clock = _Clock()
    try:
        rows = read_source(spark, cfg, staging, since)
        persisted.extend(rows.cached)
        profiles = keep(check_profiles(rows.profiles, gender_filter_on(src), src.kind not in NO_AGE_SOURCES))
        p_counts = _rule_counts(profiles)
        clock.lap("read and checked profiles")
        if sum(p_counts.values()) == 0 and rows.complete:  # (an incremental read may find nothing new)
            raise UserError(f"source {src.kind} produced no rows; check source.path / source.num_profiles")
        # Only a full read of the whole source says that an id it lacks was deleted there.
        complete = rows.complete and src.mode == "full"
        _refuse_mixed_gender_sources(spark, cfg)
        erased, n_erased, in_lake = _erased_ids(spark, cfg, profiles, complete, staging)
        known = _known_ids(spark, cfg, profiles, erased, staging)
        music = keep(check_music(rows.music, known, erased)) if rows.music is not None else None
        inter = None if rows.interactions is None else keep(check_interactions(rows.interactions, known, erased))
        counts = {"profiles": p_counts}
        clock.lap("found accounts to erase")
        if music is not None:
            counts["music_preferences"] = _rule_counts(music)
        if inter is not None:
            counts["interactions"] = _rule_counts(inter)

        clock.lap("checked music preferences and interactions")
        if complete:  # a full read must not silently empty a table either
            for table, checked in (("music_preferences", music), ("interactions", inter)):
                if checked is not None:
                    _check_absent_rows(spark, cfg, checked, table)
        _quarantine(cfg, run_id, rows.keep_corrupt_text, profiles, music, inter, counts)
        _check_limits(counts, src.max_quarantine_fraction, run_id, None if rows.complete else _lake_sizes(spark, cfg))

        good = profiles.where(F.col("_action") == "upsert")
        stats = _upsert_profiles(spark, cfg, good, run_id)
        clock.lap("merged profiles")
        n_music = None if music is None else _merge_rows(
            spark, cfg, music, "music_preferences", lambda df: _music_out(df, src.kind, run_id), complete)
        n_inter = None if inter is None else _merge_rows(
            spark, cfg, inter, "interactions", lambda df: _interactions_out(df, src, run_id), complete)
        clock.lap("merged music preferences and interactions")
        # Only ids the lake holds need erasing (a first read's banned accounts were never stored).
        erased_rows = erase_accounts(spark, cfg.lake.path, erased) if n_erased and in_lake else {}
        clock.lap("erased accounts")
        removed = bool(erased_rows) or _deleted_any(music) or _deleted_any(inter) or complete
        vacuumed = removed or _vacuum_due(spark, cfg)
        if vacuumed:
            vacuum_lake(spark, cfg.lake.path, cfg.lake.vacuum_retention_hours)
            clock.lap("vacuumed")
    finally:
        for df in persisted:
            df.unpersist()
        shutil.rmtree(staging, ignore_errors=True)

    if stats["lf"] and gender_filter_on(src):  # (without a gender filter nobody's genders matter)
        log.warning("looking_for was not given and could not be derived for %d profiles: they seek everyone",
                    stats["lf"])
    if stats["h"]:
        log.warning("height outside [90, 250] cm was set to missing for %d profiles", stats["h"])
    if not gender_filter_on(src):
        log.warning("gender filter is off (source.gender_filter=%s, source %s): anyone may be matched with anyone",
                    src.gender_filter, src.kind)
    info = {"source": src.kind, "rows_read": sum(p_counts.values()), "profiles_ingested": stats["n"],
            "quarantined": _bad(p_counts), "quarantined_by_rule": _by_rule(p_counts),
            "looking_for_defaulted": stats["lf"], "height_nulled": stats["h"],
            "erased_accounts": n_erased, "erased_rows": erased_rows, "complete_read": complete,
            "vacuumed": vacuumed}
    for table, n in (("music_preferences", n_music), ("interactions", n_inter)):
        if n is not None:
            info[table] = {"rows_read": sum(counts[table].values()), "quarantined": _bad(counts[table]),
                           "quarantined_by_rule": _by_rule(counts[table]), "rows_in_lake": n}
    info.update(rows.info)
    return info


class _Clock:
    """Progress lines a person can follow: what was done and how long it took."""

    def __init__(self):
        import time
        self._time = time.time
        self._last = time.time()

    def lap(self, what: str) -> None:
        now = self._time()
        log.info("ingest: %s in %.1fs", what, now - self._last)
        self._last = now


# --- checking -----------------------------------------------------------------------
def check_profiles(cands, gender_filter: bool, has_age: bool):
    """Candidate profiles with ``_rule``/``_reason`` and ``_action``: upsert, erase or keep
    (quarantined: the lake's version, if any, is kept)."""
    from pyspark.sql import functions as F
    # A source may leave out any profile column (Last.fm has no gender or orientation,
    # Speed Dating no height): the absent ones are typed nulls, as SourceRows promises.
    absent = [f for f in conform(cands.limit(0), PROFILES_DDL).schema.fields if f.name not in cands.columns]
    cands = cands.withColumns({f.name: F.lit(None).cast(f.dataType) for f in absent})
    cols = cands.columns
    deleted = F.col("deleted_at").isNotNull() if "deleted_at" in cols else F.lit(False)
    banned = F.coalesce(F.col("banned"), F.lit(False)) if "banned" in cols else F.lit(False)
    has_id = F.col("id").isNotNull() & (F.col("id") != "")
    # A row that erases an account is not judged by the rules: whatever else it says, the
    # account must go.
    erase = F.coalesce(F.col("_corrupt_record").isNull() & has_id & (deleted | banned), F.lit(False))
    checked = apply_rules(cands.withColumn("_erase", erase), profile_rules(gender_filter, has_age))
    checked = mark_duplicates(_exempt(checked, F.col("_erase")), "id", "_pos")
    action = (F.when(F.col("_rule").isNotNull(), "keep").when(F.col("_erase"), "erase").otherwise("upsert"))
    return checked.withColumn("_action", action)


def check_music(music, known, erased=None):
    """Music rows with ``_rule``/``_reason``/``_action`` (upsert, delete, skip or keep)."""
    marked = _mark_known(music, known, "user_id", "_user_known")
    if erased is not None:
        marked = _mark_known(marked, erased, "user_id", "_user_erased")
    return _finish(apply_rules(marked, music_rules()))


def check_interactions(inter, known, erased=None):
    """Interaction rows with ``_rule``/``_reason``/``_action`` (upsert, delete, skip or keep)."""
    marked = _mark_known(_mark_known(inter, known, "user_id", "_user_known"), known, "profile_id", "_profile_known")
    if erased is not None:
        marked = _mark_known(_mark_known(marked, erased, "user_id", "_user_erased"),
                             erased, "profile_id", "_profile_erased")
    return _finish(apply_rules(marked, interaction_rules()))


def _exempt(checked, cond):
    """Clear the rule a row broke where ``cond`` holds: such rows are not judged (a row
    that deletes or erases must take effect whatever else it says)."""
    from pyspark.sql import functions as F
    return (checked.withColumn("_rule", F.when(cond, None).otherwise(F.col("_rule")))
            .withColumn("_reason", F.when(cond, None).otherwise(F.col("_reason"))))


def _mark_known(df, known, col: str, flag: str):
    """Add ``flag``: whether ``col`` names a profile in ``known`` (a DataFrame of ``id``)."""
    from pyspark.sql import functions as F
    ids = known.select(F.col("id").alias(f"_{flag}_id"), F.lit(True).alias(flag))
    return (df.join(ids, df[col] == ids[f"_{flag}_id"], "left").drop(f"_{flag}_id")
            .withColumn(flag, F.coalesce(F.col(flag), F.lit(False))))


def _finish(checked):
    """Duplicates, then the action: a row marked deleted at the source deletes (whatever
    else it says); a row about an account being erased is skipped (it goes with the
    account); a bad row is kept out; the rest is upserted."""
    from pyspark.sql import functions as F
    cols = checked.columns
    deleted = F.col("deleted_at").isNotNull() if "deleted_at" in cols else F.lit(False)
    erased = F.lit(False)
    for flag in ("_user_erased", "_profile_erased"):
        if flag in cols:
            erased = erased | F.col(flag)
    has_id = F.col("id").isNotNull() & (F.col("id") != "")
    delete = F.coalesce(has_id & deleted, F.lit(False))
    checked = mark_duplicates(_exempt(checked, delete | erased), "id", "_pos")
    action = (F.when(F.col("_rule").isNotNull(), "keep").when(delete, "delete").when(erased, "skip")
              .otherwise("upsert"))
    return checked.withColumn("_action", action)


def _rule_counts(checked) -> dict:
    """{rule or None: rows}: one small aggregate, a row per rule."""
    return {r["_rule"]: r["count"] for r in checked.groupBy("_rule").count().collect()}


def _bad(counts: dict) -> int:
    return sum(v for k, v in counts.items() if k is not None)


def _by_rule(counts: dict) -> dict:
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])) if k is not None}


def _quarantine(cfg, run_id, keep_text, profiles, music, inter, counts) -> None:
    """One append commit with every bad row of every table."""
    from pyspark.sql import functions as F
    kind = cfg.source.kind
    parts = []
    if _bad(counts["profiles"]):
        parts.append(quarantine_rows(profiles.where(F.col("_rule").isNotNull()), kind, run_id, keep_text))
    if music is not None and _bad(counts["music_preferences"]):
        parts.append(quarantine_rows(music.where(F.col("_rule").isNotNull()), kind, run_id, True,
                                     "music_preferences", ("user_id",)))
    if inter is not None and _bad(counts["interactions"]):
        parts.append(quarantine_rows(inter.where(F.col("_rule").isNotNull()), kind, run_id, True,
                                     "interactions", ("user_id", "profile_id")))
    if parts:
        out = parts[0]
        for p in parts[1:]:
            out = out.unionByName(p)
        lake.write_table(out, cfg.lake.path, "quarantine", mode="append")
    for table, c in counts.items():
        log.info("ingest %s %s: %d rows read, %d quarantined %s", kind, table, sum(c.values()), _bad(c),
                 _by_rule(c))


def _lake_sizes(spark, cfg) -> dict:
    return {t: lake.read_table(spark, cfg.lake.path, t).count() if lake.table_exists(spark, cfg.lake.path, t) else 0
            for t in ("profiles", "music_preferences", "interactions")}


def _check_limits(counts: dict, limit: float, run_id: str, lake_sizes: dict | None = None) -> None:
    """Fail past the limit. An incremental read (``lake_sizes`` given) is measured against
    the table it lands in, so one bad signup among a few changed rows does not stall it."""
    for table, c in counts.items():
        bad = _bad(c)
        total = sum(c.values()) + (lake_sizes or {}).get(table, 0)
        if total and bad / total > limit:
            raise UserError(
                f"{bad} of {total} rows of {table} ({bad / total:.1%}) failed validation, more than "
                f"source.max_quarantine_fraction={limit}; the rows are in the quarantine table (run_id {run_id}); "
                "the lake's tables were left as they were")


# --- erased accounts, known ids -------------------------------------------------------
def _erased_ids(spark, cfg, profiles, complete: bool, staging: str):
    """(ids to erase, their number, whether any is in the lake), written to staging so that later writes to profiles do
    not change them. A full read that would erase more than ``source.max_erase_fraction``
    of the source's profiles is refused: far more likely a wrong or truncated input."""
    from pyspark.sql import functions as F
    erased = profiles.where(F.col("_action") == "erase").select("id")
    absent, ours = 0, 0
    if complete and lake.table_exists(spark, cfg.lake.path, "profiles"):
        # The read is the whole source: its ids the lake holds and the read does not are gone.
        seen = profiles.where(F.col("id").isNotNull()).select("id")
        mine = lake.read_table(spark, cfg.lake.path, "profiles").where(F.col("source") == cfg.source.kind).select("id")
        gone = mine.join(seen, "id", "left_anti")
        erased = erased.unionByName(gone)
        ours, absent = mine.count(), gone.count()
    limit = cfg.source.max_erase_fraction
    if ours and absent / ours > limit:
        raise UserError(
            f"source.mode=full: the read lacks {absent} of the lake's {ours} {cfg.source.kind} profiles "
            f"({absent / ours:.1%}), more than source.max_erase_fraction={limit}; check the input, or raise "
            "the limit if they really were deleted; nothing was changed")
    path = f"{staging}/erased"
    erased.distinct().write.mode("overwrite").parquet(path)
    out = spark.read.parquet(path)
    n = out.count()
    in_lake = n > 0 and lake.table_exists(spark, cfg.lake.path, "profiles") and \
        out.join(lake.read_table(spark, cfg.lake.path, "profiles").select("id"), "id", "left_semi").limit(1).count() > 0
    return out, n, in_lake


def _refuse_mixed_gender_sources(spark, cfg) -> None:
    """The gender filter holds for a whole lake: a source without genders (filter off) and
    one with genders must not share one, or people would get matches against their stated
    preferences (or none at all)."""
    from lib.config import NO_GENDER_SOURCES
    if not lake.table_exists(spark, cfg.lake.path, "profiles"):
        return
    kinds = {r["source"] for r in lake.read_table(spark, cfg.lake.path, "profiles").select("source").distinct()
             .collect()}  # a handful of source names
    mine = cfg.source.kind
    clash = sorted(k for k in kinds if k and (k in NO_GENDER_SOURCES) != (mine in NO_GENDER_SOURCES))
    if clash:
        raise UserError(f"lake {cfg.lake.path} holds profiles of source {', '.join(clash)}; source {mine} "
                        f"{'has no' if mine in NO_GENDER_SOURCES else 'has'} genders, so the gender filter cannot "
                        "hold for both: ingest it into a lake of its own (--set lake.path=...)")


def _check_absent_rows(spark, cfg, checked, table: str) -> None:
    """A full read deletes this source's rows it lacks; refuse when that is more than
    ``source.max_erase_fraction`` of them (a truncated file, not a mass deletion)."""
    from pyspark.sql import functions as F
    if not lake.table_exists(spark, cfg.lake.path, table):
        return
    mine = lake.read_table(spark, cfg.lake.path, table).where(F.col("source") == cfg.source.kind).select("id")
    total = mine.count()
    if not total:
        return
    absent = mine.join(checked.where(F.col("id").isNotNull()).select("id"), "id", "left_anti").count()
    limit = cfg.source.max_erase_fraction
    if absent / total > limit:
        raise UserError(
            f"source.mode=full: the read lacks {absent} of the lake's {total} {cfg.source.kind} {table} rows "
            f"({absent / total:.1%}), more than source.max_erase_fraction={limit}; check the input, or raise "
            "the limit if they really were deleted; nothing was changed")


def _known_ids(spark, cfg, profiles, erased, staging: str):
    """Profile ids music and interactions may point at: the lake's and this batch's good
    ones, less the erased. Written to staging (read before profiles are rewritten)."""
    from pyspark.sql import functions as F
    ids = profiles.where(F.col("_action") == "upsert").select("id")
    if lake.table_exists(spark, cfg.lake.path, "profiles"):
        ids = ids.unionByName(lake.read_table(spark, cfg.lake.path, "profiles").select("id"))
    path = f"{staging}/known"
    ids.distinct().join(erased, "id", "left_anti").write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


# --- writing --------------------------------------------------------------------------
def _upsert_profiles(spark, cfg, good, run_id: str) -> dict:
    from pyspark.sql import functions as F
    src = cfg.source
    given = F.col("looking_for") if "looking_for" in good.columns else F.lit(None).cast("array<string>")
    good = (good
            .withColumn("_lf_default", looking_for_defaulted_col(F.col("gender"), F.col("sexual_orientation"), given))
            .withColumn("looking_for", looking_for_col(F.col("gender"), F.col("sexual_orientation"), given))
            .withColumn("_height_nulled", F.col("height").isNotNull() & height_in_range(F.col("height")).isNull())
            .withColumn("height", height_in_range(F.col("height")))
            .withColumn("source", F.lit(src.kind))
            .withColumn("banned", F.lit(False))
            .withColumn("deleted_at", F.lit(None).cast("timestamp"))
            .withColumn("updated_at", F.current_timestamp())
            .withColumn("ingest_run_id", F.lit(run_id)))
    # The lake keeps no names, photos or bios: they are never needed downstream.
    for c in PRIVATE_COLUMNS:
        good = good.withColumn(c, F.lit(None).cast("string"))
    stats = good.agg(F.count("*").alias("n"), F.sum(F.col("_lf_default").cast("int")).alias("lf"),
                     F.sum(F.col("_height_nulled").cast("int")).alias("h")).first()
    out = with_content_hash(conform(good, PROFILES_DDL, keep=("_action",)))
    _merge(spark, cfg.lake.path, "profiles", out, complete_source=None)
    return {"n": int(stats["n"]), "lf": int(stats["lf"] or 0), "h": int(stats["h"] or 0)}


def _music_out(music, kind: str, run_id: str):
    from pyspark.sql import functions as F
    return conform(music.withColumn("source", F.lit(kind)).withColumn("ingest_run_id", F.lit(run_id)), MUSIC_DDL,
                   keep=("_action",))


def _interactions_out(inter, src, run_id: str):
    """Label from the event; a share of positive pairs held out for evaluation, chosen by a
    hash of the pair (so every event of a pair, in either direction, is on the same side,
    run after run)."""
    from pyspark.sql import functions as F
    label = F.element_at(F.create_map(*[F.lit(x) for kv in EVENT_LABELS.items() if kv[1] is not None for x in kv]),
                         F.col("event"))
    # The hash of the unordered pair: a friendship or match recorded from both sides is held
    # out from both sides, or from neither (otherwise training would see the answer).
    a, b = F.least("user_id", "profile_id"), F.greatest("user_id", "profile_id")
    u = F.pmod(F.xxhash64(F.lit("holdout"), a, b), F.lit(1_000_000)) / F.lit(1_000_000.0)
    held = (label == 1) & (u < F.lit(src.holdout_fraction))
    return conform(inter.withColumn("label", label).withColumn("source", F.lit(src.kind))
                   .withColumn("split", F.when(held, "heldout").otherwise("train"))
                   .withColumn("run_id", F.lit(run_id)), INTERACTIONS_DDL, keep=("_action",))


def _merge_rows(spark, cfg, checked, table: str, build, complete: bool) -> int:
    """MERGE checked music/interaction rows: upserts, deletes, and (complete reads) deletes
    of this source's rows the read no longer has. ``build`` maps rows to the table's
    columns (keeping ``_action``). Returns the table's row count."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    # One source row per id: the action row first; quarantined copies only keep an id alive.
    w = Window.partitionBy("id").orderBy(F.when(F.col("_action") == "keep", 1).otherwise(0), "_pos")
    one = checked.where(F.col("id").isNotNull()).withColumn("_n", F.row_number().over(w)).where(F.col("_n") == 1)
    _merge(spark, cfg.lake.path, table, with_content_hash(build(one)), cfg.source.kind if complete else None)
    return lake.read_table(spark, cfg.lake.path, table).count()


def _merge(spark, lake_path: str, table: str, rows, complete_source: str | None) -> None:
    """One Delta MERGE by id over ``rows`` (table columns plus ``content_hash``, ``_action``):
    upsert rows whose content changed, delete rows marked delete, and, for a complete read,
    delete the source's rows that the read does not have."""
    from delta.tables import DeltaTable
    path = lake.table_path(lake_path, table)
    cols = [c for c in rows.columns if c != "_action"]
    if not DeltaTable.isDeltaTable(spark, path):
        lake.write_table(rows.where("_action = 'upsert'").select(*cols), lake_path, table, mode="overwrite")
        return
    _add_new_columns(spark, path, rows.select(*cols).schema)
    values = {c: f"s.`{c}`" for c in cols}
    m = (DeltaTable.forPath(spark, path).alias("t").merge(rows.alias("s"), "t.id = s.id")
         .whenMatchedDelete(condition="s._action = 'delete'")
         .whenMatchedUpdate(condition="s._action = 'upsert' AND NOT (t.content_hash <=> s.content_hash)",
                            set=values)
         .whenNotMatchedInsert(condition="s._action = 'upsert'", values=values))
    if complete_source:
        m = m.whenNotMatchedBySourceDelete(condition=f"t.source = '{complete_source}'")
    m.execute()


def _add_new_columns(spark, path: str, schema) -> None:
    """A lake made by an older version lacks columns added since (the match settings):
    add them, empty, so the MERGE can fill them. Existing rows and history are untouched."""
    have = set(spark.read.format("delta").load(path).columns)
    new = [f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields if f.name not in have]
    if new:
        log.info("ingest: adding columns %s to %s", ", ".join(new), os.path.basename(path))
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({', '.join(new)})")


# --- housekeeping -----------------------------------------------------------------------
def _deleted_any(checked) -> bool:
    from pyspark.sql import functions as F
    return checked is not None and checked.where(F.col("_action") == "delete").limit(1).count() > 0


def _vacuum_due(spark, cfg) -> bool:
    """VACUUM is slow, so an ingest that removed nothing runs it only when the last one is
    older than ``lake.vacuum_every_hours``: rows erased earlier then leave history at most
    that long after the retention has passed."""
    from pyspark.sql import functions as F
    if not lake.table_exists(spark, cfg.lake.path, "runs"):
        return False  # a new lake: no history to trim yet
    last = (lake.read_table(spark, cfg.lake.path, "runs")
            .where((F.col("stage") == "ingest") & (F.get_json_object("info", "$.vacuumed") == "true"))
            .agg(F.max("finished_at").alias("t")).first()["t"])
    if last is None:
        return True
    age_h = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - last).total_seconds() / 3600
    return age_h >= cfg.lake.vacuum_every_hours


# --- incremental reads ----------------------------------------------------------------
def _previous_watermark(spark, cfg):
    """The high-water mark of the last successful incremental read of the same database,
    or None (a full read) for other sources, mode=full or a first run."""
    from pyspark.sql import functions as F
    src = cfg.source
    if src.kind != "postgres" or src.mode == "full" or not lake.table_exists(spark, cfg.lake.path, "runs"):
        return None
    from lib.pg import redact
    runs = (lake.read_table(spark, cfg.lake.path, "runs")
            .where((F.col("stage") == "ingest") & (F.col("status") == "succeeded"))
            .where(F.get_json_object("info", "$.source") == "postgres")
            .where(F.get_json_object("info", "$.source_url") == redact(src.url))
            .select(F.get_json_object("info", "$.watermark").alias("w"))
            .where(F.col("w").isNotNull()).orderBy(F.col("w").desc()).limit(1).collect())
    if not runs:
        return None
    return dt.datetime.fromisoformat(runs[0]["w"])

