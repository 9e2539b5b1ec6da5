"""export: the lake's matches into the app's Postgres, atomically, against a real server."""
import datetime as dt
import threading
import uuid

import pytest

from lib import export, lake
from lib.cli import MODULES, main
from lib.errors import UserError
from lib.schema import MATCHES_DDL
from tests.conftest import ROOT, make_cfg, pg_admin_connect

UTC = dt.timezone.utc
COLS = "user_id::text, rank, profile_id::text, score::float8, model_version, run_id, generated_at"


def matches_rows(run_id: str, users: int, k: int, seed: int = 0) -> list:
    """``users`` x ``k`` match rows of one run (generated_at as aware UTC datetimes)."""
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC) + dt.timedelta(days=seed)
    rows = []
    for u in range(users):
        user = str(uuid.UUID(int=(seed << 64) + u + 1))
        for r in range(1, k + 1):
            rows.append((user, r, str(uuid.uuid4()), 1.0 / (r + 0.1 * u + seed), "model-1", run_id, at))
    return rows


def write_matches(spark, lake_dir: str, rows: list) -> None:
    lake.write_table(spark.createDataFrame(rows, MATCHES_DDL), lake_dir, "matches")


def pg_rows(conn, table="public.matches") -> list:
    return sorted(conn.execute(f"SELECT {COLS} FROM {table}").fetchall())


def expected(spark, rows: list) -> list:
    """The rows as Postgres returns them: scores as the float32 the lake holds, in float8."""
    import numpy as np
    return sorted((u, r, p, float(np.float32(s)), m, run, at) for u, r, p, s, m, run, at in rows)


def test_export_publishes_the_delta_rows(spark, lake_dir, pg_db):
    rows = matches_rows("run-1", users=7, k=5)
    write_matches(spark, lake_dir, rows)
    cfg = make_cfg(lake_dir, f"sink.url={pg_db}", "sink.table=public.app_matches", "sink.write_partitions=3")

    info = export.run(spark, cfg, "run-1")

    assert info["rows"] == 35 and info["table"] == "public.app_matches"
    with pg_admin_connect(pg_db) as conn:
        assert pg_rows(conn, "public.app_matches") == expected(spark, rows)
        # Created from db/schema.sql's definition: typed columns and the primary key.
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = 'app_matches'").fetchall())
        assert types["user_id"] == "uuid" and types["score"] == "real"
        assert types["generated_at"] == "timestamp with time zone"
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.app_matches'::regclass "
                            "AND contype = 'p'").fetchone()[0] == 1
        assert no_staging_tables(conn)


def no_staging_tables(conn) -> bool:
    return conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE %s",
                        [export.STAGING_PREFIX + "%"]).fetchone()[0] == 0


def test_readers_see_one_whole_run_and_the_table_keeps_its_setup(spark, lake_dir, pg_db):
    cfg = make_cfg(lake_dir, f"sink.url={pg_db}", "sink.write_partitions=2")
    run1, run2 = matches_rows("run-1", 40, 25), matches_rows("run-2", 60, 25, seed=1)
    write_matches(spark, lake_dir, run1)
    export.run(spark, cfg, "run-1")
    role = f"app_reader_{uuid.uuid4().hex[:8]}"
    with pg_admin_connect(pg_db) as conn:
        # What the app set up on its table: a grant, an index, row-level security.
        oid = conn.execute("SELECT 'public.matches'::regclass::oid").fetchone()[0]
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"GRANT SELECT ON public.matches TO {role}")
        conn.execute("CREATE INDEX matches_profile_idx ON public.matches (profile_id)")
        conn.execute("ALTER TABLE public.matches ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY own_matches ON public.matches FOR SELECT USING (true)")
    try:
        write_matches(spark, lake_dir, run2)
        seen, stop, errors = [], threading.Event(), []

        def reader():
            try:
                with pg_admin_connect(pg_db) as conn:
                    while not stop.is_set():
                        seen.append(conn.execute("SELECT count(*), count(DISTINCT run_id), min(run_id) "
                                                 "FROM public.matches").fetchone())
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=reader)
        t.start()
        try:
            export.run(spark, cfg, "run-2")
        finally:
            stop.set()
            t.join(30)
        assert not errors, errors
        assert len(seen) >= 3, seen  # the reader ran during the export
        assert set(seen) <= {(len(run1), 1, "run-1"), (len(run2), 1, "run-2")}, set(seen)

        with pg_admin_connect(pg_db) as conn:
            # (The reader's last query may have begun before the commit: ask afresh.)
            assert conn.execute("SELECT count(*), count(DISTINCT run_id), min(run_id) FROM public.matches"
                                ).fetchone() == (len(run2), 1, "run-2")
            assert pg_rows(conn) == expected(spark, run2)
            assert conn.execute("SELECT 'public.matches'::regclass::oid").fetchone()[0] == oid
            assert conn.execute("SELECT has_table_privilege(%s, 'public.matches', 'SELECT')", [role]).fetchone()[0]
            assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'matches_profile_idx'"
                                ).fetchone()[0] == 1
            assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = %s", [oid]).fetchone()[0]
            assert conn.execute("SELECT count(*) FROM pg_policies WHERE policyname = 'own_matches'").fetchone()[0] == 1
            assert no_staging_tables(conn)
    finally:
        with pg_admin_connect(pg_db) as conn:
            conn.execute(f"REVOKE ALL ON public.matches FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_failed_export_keeps_the_previous_rows_and_no_staging_table(spark, lake_dir, pg_db):
    with pg_admin_connect(pg_db) as conn:
        # An app table whose profile_id is not a uuid: the new rows cannot go in.
        conn.execute("CREATE TABLE public.legacy_matches (user_id uuid, rank int, profile_id int, score real, "
                     "model_version text, run_id text, generated_at timestamptz, PRIMARY KEY (user_id, rank))")
        conn.execute("INSERT INTO public.legacy_matches VALUES (gen_random_uuid(), 1, 42, 0.5, 'm0', 'old', now()), "
                     "(gen_random_uuid(), 2, 43, 0.4, 'm0', 'old', now())")
        before = conn.execute("SELECT * FROM public.legacy_matches ORDER BY rank").fetchall()
    write_matches(spark, lake_dir, matches_rows("run-1", 3, 4))
    cfg = make_cfg(lake_dir, f"sink.url={pg_db}", "sink.table=legacy_matches")

    with pytest.raises(UserError, match="public.legacy_matches.*keeps its previous rows"):
        export.run(spark, cfg, "run-1")

    with pg_admin_connect(pg_db) as conn:
        assert conn.execute("SELECT * FROM public.legacy_matches ORDER BY rank").fetchall() == before
        assert no_staging_tables(conn)


def test_an_empty_matches_table_is_not_exported(spark, lake_dir, pg_db):
    with pg_admin_connect(pg_db) as conn:
        conn.execute("INSERT INTO public.matches (user_id, rank, run_id) VALUES (gen_random_uuid(), 1, 'old')")
    lake.write_table(spark.createDataFrame([], MATCHES_DDL), lake_dir, "matches")
    with pytest.raises(UserError, match="empty"):
        export.run(spark, make_cfg(lake_dir, f"sink.url={pg_db}"), "run-1")
    with pg_admin_connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM public.matches").fetchone()[0] == 1


@pytest.mark.parametrize("table", ["public.matches; DROP TABLE profiles", "a.b.c", '"Matches"', "1matches", ""])
def test_the_sink_table_must_be_a_plain_name(table):
    with pytest.raises(UserError, match="plain table name"):
        export.parse_table(table)
    assert export.parse_table("App.Matches") == ("app", "matches")
    assert export.parse_table("matches") == ("public", "matches")


def test_export_is_a_job_of_the_command_line(spark, lake_dir, pg_db):
    assert MODULES["export"] == "lib.export"
    write_matches(spark, lake_dir, matches_rows("run-9", 2, 3))
    argv = ["--conf", f"{ROOT}/conf/local.yaml", "--set", f"lake.path={lake_dir}", "--set", f"sink.url={pg_db}"]
    assert main(["export"], argv=argv) == 0
    assert lake.latest_run(spark, lake_dir, "export")["info"]["rows"] == 6
    with pg_admin_connect(pg_db) as conn:
        assert conn.execute("SELECT count(*) FROM public.matches").fetchone()[0] == 6
