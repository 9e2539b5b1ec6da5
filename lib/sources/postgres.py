"""The app's Postgres (Supabase ``public`` schema, see db/schema.sql) as a source.

Reads ``profiles``, ``music_preferences`` and ``interactions`` over JDBC, each table in
``source.jdbc_partitions`` parallel reads (ids are uuids, so the partitions are buckets of
their last two bytes), mapped to the lake's schema in SQL so that only what the lake keeps
leaves the database: name, avatar_url and bio are never selected.

Incremental: the database's ``now()`` is read first as the new high-water mark W. A read
with the previous mark takes the rows with ``since - overlap < updated_at <= W`` (the
overlap catches transactions that committed after the last read but stamped earlier;
reading a row twice changes nothing); a full read (no previous mark) takes every row.
Soft-deleted rows are read like any other: their ``deleted_at`` tells the lake to erase
the account.
"""
from __future__ import annotations

import datetime as dt
import logging

from lib import pg
from lib.config import SourceConfig
from lib.errors import UserError
from lib.sources import SourceRows

log = logging.getLogger(__name__)

FETCH_SIZE = 10000  # rows per round trip; >0 also makes pgjdbc stream through a cursor

# Bucket of a uuid id: its last two bytes (random in v4 ids) modulo the partition count.
_BUCKET = "mod(get_byte(uuid_send(id), 14) * 256 + get_byte(uuid_send(id), 15), {n})"
# Orders rows by created_at (microseconds); ids are unique within a read (primary keys),
# so ``_pos`` never has to break a tie between rows of one id.
_POS = "(extract(epoch FROM created_at) * 1000000)::bigint"

# Lake columns per table, as SQL over the app's table. {w} is the high-water mark.
_COLUMNS = {
    "profiles": """
        id::text AS id, created_at, setup_complete,
        extract(year FROM age({w} AT TIME ZONE 'UTC', birth_date))::int AS age,
        gender, sexual_orientation, looking_for, age_min, age_max, max_distance_km, city AS location, region, latitude, longitude,
        interests, relationship_goal, education_level, job_title,
        height_cm::double precision AS height, drinking_habits, smoking_habits, deleted_at, banned""",
    "music_preferences": "id::text AS id, created_at, user_id::text AS user_id, genre, artist_name, deleted_at",
    "interactions": """
        id::text AS id, user_id::text AS user_id, target_id::text AS profile_id, action AS event,
        created_at, deleted_at""",
}


def read_postgres(spark, src: SourceConfig, since: dt.datetime | None) -> SourceRows:
    """Profiles, music preferences and interactions changed since ``since`` (a UTC
    datetime: the previous run's ``info["watermark"]``), or all of them when None."""
    from pyspark.sql import functions as F

    url = pg.check_url(src.url, "source.url")
    watermark = _database_now(url)
    lower = None
    if since is not None:
        if since.tzinfo is None:  # a naive mark is taken as UTC
            since = since.replace(tzinfo=dt.timezone.utc)
        lower = since - dt.timedelta(seconds=src.overlap_seconds)
    # A full read takes every row, without an upper bound: a row updated while the read
    # runs would otherwise be missing from a complete read and look deleted upstream.
    # Rows changed after the mark are read again next time, which changes nothing.
    window = ("TRUE" if lower is None else
              f"updated_at > {_literal(lower)} AND updated_at <= {_literal(watermark)}")
    tables = {name: _read_table(spark, url, name, window, watermark, src.jdbc_partitions) for name in _COLUMNS}
    profiles = (tables["profiles"]
                .withColumn("_age_raw", F.col("age").cast("string"))
                .withColumn("_corrupt_record", F.lit(None).cast("string")))
    mode = "full" if since is None else "incremental"
    log.info("postgres %s read of %s (rows updated %s, high-water mark %s)", mode, pg.redact(url),
             "at any time" if lower is None else f"after {lower.isoformat()}", watermark.isoformat())
    return SourceRows(
        profiles=profiles, music=tables["music_preferences"], interactions=tables["interactions"],
        keep_corrupt_text=True,  # rows come typed from the database: never a corrupt line
        complete=since is None,
        # One fixed ISO 8601 form (always microseconds, +00:00), so marks also sort as text.
        # source_url (credential-free) keys the mark: the next incremental read of the same
        # database starts from it.
        info={"watermark": watermark.isoformat(timespec="microseconds"), "mode": mode,
              "source_url": pg.redact(url),
              "updated_after": lower.isoformat(timespec="microseconds") if lower is not None else None})


def _database_now(url: str) -> dt.datetime:
    """The database's ``now()`` in UTC: the one row this source brings to the driver."""
    with pg.connect(url, autocommit=True) as conn:
        (now,) = conn.execute("SELECT now()").fetchone()
    return now.astimezone(dt.timezone.utc)


def _read_table(spark, url: str, name: str, window: str, watermark: dt.datetime, partitions: int):
    """``public.<name>`` mapped to lake columns, rows in ``window``, in ``partitions`` reads."""
    columns = _COLUMNS[name].format(w=_literal(watermark))
    query = (f"(SELECT {columns}, {_POS} AS _pos, {_BUCKET.format(n=partitions)} AS _bucket "
             f"FROM public.{name} WHERE {window}) AS {name}")
    predicates = [f"_bucket = {i}" for i in range(partitions)]
    props = dict(pg.jdbc_options(url), fetchsize=str(FETCH_SIZE))
    props.pop("url")
    try:
        # Resolves the schema now (one query on the driver); the rows are read by the tasks.
        df = spark.read.jdbc(url, query, predicates=predicates, properties=props)
    except Exception as e:  # noqa: BLE001 (Py4J errors carry the PSQLException as text)
        if "PSQLException" not in str(e):
            raise
        raise UserError(f"cannot read public.{name} from {pg.redact(url)}: {pg.error_text(e)} "
                        "(the tables are created by db/schema.sql)") from None
    return df.drop("_bucket")


def _literal(t: dt.datetime) -> str:
    """A timestamptz SQL literal (we format it ourselves: no user text goes into the SQL)."""
    return "TIMESTAMPTZ '" + t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00") + "'"
