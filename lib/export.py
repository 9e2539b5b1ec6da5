"""export: publish the lake's ``matches`` table to the app's Postgres (``sink.table``).

The app reads that table while we write it, so the swap must be atomic: its readers see
the previous run's rows or the new run's, never a mix and never an empty table.

1. Spark writes the rows in ``sink.write_partitions`` parallel JDBC writers into a fresh
   UNLOGGED staging table of text columns (fast, no WAL; the types are checked in step 2).
2. One transaction on the driver: ``DELETE`` the table's rows, ``INSERT ... SELECT`` them
   from the staging table with casts, check the count, commit. Under MVCC readers keep
   seeing the old rows until the commit. The table itself stays, and with it the grants,
   row-level security policies, indexes and publications the app set up on it (swapping
   in another table by rename would lose them).
3. The staging table is dropped, also when anything above failed.
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid

from lib import lake, pg
from lib.config import Config
from lib.errors import CheckFailed, UserError

log = logging.getLogger(__name__)

BATCH_SIZE = 10000  # rows per JDBC batch insert
COLUMNS = ("user_id", "rank", "profile_id", "score", "model_version", "run_id", "generated_at")
# Staging text -> the table's types. generated_at travels as microseconds since the epoch,
# which no session time zone can shift.
CASTS = {"user_id": "user_id::uuid", "rank": "rank::int", "profile_id": "profile_id::uuid",
         "score": "score::real", "model_version": "model_version", "run_id": "run_id",
         "generated_at": "TIMESTAMPTZ 'epoch' + generated_at::bigint * INTERVAL '1 microsecond'"}
STAGING_PREFIX = "twotower_staging_"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def run(spark, cfg: Config, run_id: str) -> dict:
    from delta.tables import DeltaTable

    if not cfg.sink.url:
        raise UserError("export needs the app's database: --set sink.url=jdbc:postgresql://HOST:5432/DB "
                        "(credentials from PGUSER / PGPASSWORD)")
    url = pg.check_url(cfg.sink.url, "sink.url")
    schema, table = parse_table(cfg.sink.table)
    lake.read_table(spark, cfg.lake.path, "matches", "match")  # a clear error when there is none
    # One Delta version for the count and the rows, even if a match run commits meanwhile.
    path = lake.table_path(cfg.lake.path, "matches")
    version = DeltaTable.forPath(spark, path).history(1).collect()[0]["version"]
    matches = spark.read.format("delta").option("versionAsOf", version).load(path)
    expected = matches.count()
    if expected == 0:  # would leave the app with no matches at all
        raise UserError(f"the lake's matches table (version {version}) is empty; nothing was exported and "
                        f"{schema}.{table} keeps its rows; run 'match' first")

    staging = STAGING_PREFIX + re.sub(r"[^a-z0-9]", "_", run_id.lower())[:32] + "_" + uuid.uuid4().hex[:6]
    started = time.time()
    try:
        with pg.connect(url, autocommit=True) as conn:
            ensure_table(conn, schema, table)
            create_staging(conn, schema, staging)
        write_staging(matches, url, f'"{schema}"."{staging}"', cfg.sink.write_partitions)
        wrote = time.time()
        published = publish(url, schema, table, staging, expected)
    finally:
        drop_staging(url, schema, staging)
    done = time.time()
    log.info("export: %d matches (lake version %d) published to %s.%s at %s", published, version, schema, table,
             pg.redact(url))
    return {"table": f"{schema}.{table}", "rows": published, "matches_version": version,
            "write_seconds": round(wrote - started, 1), "publish_seconds": round(done - wrote, 1)}


def parse_table(name: str) -> tuple[str, str]:
    """(schema, table) of ``[schema.]table`` (schema public when not given), folded to lower
    case as PostgreSQL folds unquoted names; anything but plain identifiers is refused."""
    parts = (name or "").strip().split(".")
    if len(parts) == 1:
        parts = ["public"] + parts
    if len(parts) != 2 or not all(_IDENT.match(p) for p in parts):
        raise UserError(f"sink.table {name!r} must be a plain table name, optionally with its schema, "
                        "like public.matches (letters, digits, '_')")
    return parts[0].lower(), parts[1].lower()


def table_ddl() -> str:
    """The column list of ``public.matches`` in db/schema.sql (the one definition of it)."""
    from lib.cli import ROOT
    path = os.path.join(ROOT, "db", "schema.sql")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        raise UserError(f"{path} not found: run from the project folder or set TWOTOWER_HOME to it") from None
    m = re.search(r"CREATE TABLE IF NOT EXISTS public\.matches\s*\((.*?)\n\);", text, re.S | re.I)
    if not m:
        raise UserError(f"{path} has no CREATE TABLE IF NOT EXISTS public.matches (...); statement")
    return re.sub(r"--[^\n]*", "", m.group(1)).strip()


def ensure_table(conn, schema: str, table: str) -> None:
    """Create the target table from db/schema.sql when it does not exist (an existing one is
    left exactly as it is; CREATE would need a privilege on the schema the app may not give)."""
    from psycopg import sql
    (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                             [sql.Identifier(schema, table).as_string(conn)]).fetchone()
    if not exists:
        log.info("export: creating %s.%s (db/schema.sql)", schema, table)
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + table_ddl().replace("{", "{{").replace("}", "}}")
                             + ")").format(sql.Identifier(schema, table)))


def create_staging(conn, schema: str, staging: str) -> None:
    from psycopg import sql
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in COLUMNS)
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(sql.Identifier(schema, staging), cols))


def write_staging(matches, url: str, staging: str, partitions: int) -> None:
    """All columns as text into ``staging`` (quoted), in ``partitions`` parallel writers."""
    from pyspark.sql import functions as F
    rows = matches.select(*[
        (F.unix_micros(F.col(c)) if c == "generated_at" else F.col(c)).cast("string").alias(c) for c in COLUMNS])
    props = dict(pg.jdbc_options(url), batchsize=str(BATCH_SIZE), numPartitions=str(partitions),
                 reWriteBatchedInserts="true")  # pgjdbc: one multi-row INSERT per batch
    props.pop("url")
    try:
        rows.repartition(partitions).write.jdbc(url, staging, mode="append", properties=props)
    except Exception as e:  # noqa: BLE001 (Py4J errors carry the PSQLException as text)
        if "PSQLException" not in str(e):
            raise
        raise UserError(f"writing the matches to {pg.redact(url)} failed: {pg.error_text(e)}") from None


def publish(url: str, schema: str, table: str, staging: str, expected: int) -> int:
    """Replace the table's rows by the staging rows in one transaction; the count inserted."""
    import psycopg
    from psycopg import sql
    target, source = sql.Identifier(schema, table), sql.Identifier(schema, staging)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    casts = sql.SQL(", ").join(sql.SQL(CASTS[c]) for c in COLUMNS)
    with pg.connect(url) as conn:
        try:
            with conn.transaction():
                # Two exports at once would interleave their DELETE and INSERT: take turns.
                # This lock does not conflict with readers (ACCESS SHARE).
                conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(target))
                conn.execute(sql.SQL("DELETE FROM {}").format(target))
                cur = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                    target, names, casts, source))
                if cur.rowcount != expected:  # e.g. a retried writer task; the rollback keeps the old rows
                    raise CheckFailed(f"export staged {cur.rowcount} rows for {expected} matches; "
                                      f"{schema}.{table} was left as it was")
        except psycopg.Error as e:
            raise UserError(f"publishing the matches to {schema}.{table} failed: {pg.error_text(e)}; "
                            "the table keeps its previous rows") from None
    return expected


def drop_staging(url: str, schema: str, staging: str) -> None:
    """Drop the staging table; a failure here is logged, never hides the error that got us here."""
    from psycopg import sql
    try:
        with pg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, staging)))
    except Exception as e:  # noqa: BLE001
        log.warning("export: could not drop the staging table %s.%s (%s); drop it by hand", schema, staging,
                    e if isinstance(e, UserError) else pg.error_text(e))
