"""The app's Postgres as a source, against a real server (scripts/postgres.sh): mapping to
the lake schema, incremental reads by high-water mark, partitions, credentials."""
import datetime as dt
import uuid

import pytest

from lib import pg
from lib.config import SourceConfig
from lib.errors import UserError
from lib.sources.postgres import read_postgres
from tests.conftest import pg_admin_connect

UTC = dt.timezone.utc
PRIVATE = ("name", "avatar_url", "bio")
SECRET_NAME = "Zelda Secretname"


def src_for(url, partitions=2, overlap=0):
    return SourceConfig(kind="postgres", url=url, jdbc_partitions=partitions, overlap_seconds=overlap)


def years_ago(d: dt.date, years: int) -> dt.date:
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February
        return d.replace(year=d.year - years, day=28)


def age_at(birth: dt.date, when: dt.date) -> int:
    """Whole years, by hand: one less when this year's birthday is still to come."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


def add_profile(conn, **values) -> str:
    row = {"name": SECRET_NAME, "avatar_url": "https://img.example/zelda.png", "bio": "my private bio",
           "setup_complete": True, "gender": "female", "sexual_orientation": "straight",
           "birth_date": dt.date(1990, 6, 15), **values}
    cols = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    return str(conn.execute(f"INSERT INTO profiles ({cols}) VALUES ({marks}) RETURNING id",
                            list(row.values())).fetchone()[0])


def rows_by_id(df):
    return {r["id"]: r.asDict() for r in df.collect()}


def test_full_read_maps_the_app_schema_to_the_lake(spark, pg_db):
    today = dt.datetime.now(UTC).date()
    birthday_today = years_ago(today, 30)
    birthday_tomorrow = years_ago(today + dt.timedelta(days=1), 25)
    with pg_admin_connect(pg_db) as conn:
        a = add_profile(conn, city="Lisbon", region="Lisboa", latitude=38.72, longitude=-9.14, height_cm=171.5,
                        looking_for=["male"], interests=["hiking", "jazz"], relationship_goal="long-term",
                        education_level="masters", job_title="nurse", drinking_habits="socially",
                        smoking_habits="never", birth_date=dt.date(1990, 6, 15))
        b = add_profile(conn, gender="male", birth_date=birthday_today)
        c = add_profile(conn, gender="male", birth_date=birthday_tomorrow, setup_complete=False)
        d = add_profile(conn, birth_date=None)
        m = str(conn.execute("INSERT INTO music_preferences (user_id, genre, artist_name) VALUES (%s, 'jazz', "
                             "'Nina Simone') RETURNING id", [a]).fetchone()[0])
        i = str(conn.execute("INSERT INTO interactions (user_id, target_id, action) VALUES (%s, %s, 'like') "
                             "RETURNING id", [a, b]).fetchone()[0])
        created_a = conn.execute("SELECT created_at FROM profiles WHERE id = %s", [a]).fetchone()[0]

    rows = read_postgres(spark, src_for(pg_db), None)

    assert rows.complete is True
    w = dt.datetime.fromisoformat(rows.info["watermark"])
    assert w.utcoffset() == dt.timedelta(0)
    for df in (rows.profiles, rows.music, rows.interactions):
        assert not set(PRIVATE) & set(df.columns), df.columns
    profiles = rows_by_id(rows.profiles)
    assert set(profiles) == {a, b, c, d}
    assert SECRET_NAME not in repr(profiles) and "private bio" not in repr(profiles)
    pa = profiles[a]
    assert pa["age"] == age_at(dt.date(1990, 6, 15), w.date()) and pa["_age_raw"] == str(pa["age"])
    assert (pa["location"], pa["region"], pa["latitude"], pa["longitude"]) == ("Lisbon", "Lisboa", 38.72, -9.14)
    assert isinstance(pa["height"], float) and pa["height"] == 171.5
    assert pa["looking_for"] == ["male"] and pa["interests"] == ["hiking", "jazz"]
    assert (pa["gender"], pa["sexual_orientation"], pa["setup_complete"]) == ("female", "straight", True)
    assert (pa["relationship_goal"], pa["education_level"], pa["job_title"]) == ("long-term", "masters", "nurse")
    assert (pa["drinking_habits"], pa["smoking_habits"]) == ("socially", "never")
    assert pa["deleted_at"] is None and pa["banned"] is False
    assert pa["_corrupt_record"] is None and isinstance(pa["_pos"], int)
    assert pa["created_at"].astimezone(UTC) == created_a  # PySpark gives local naive datetimes
    assert profiles[b]["age"] == 30  # birthday today
    assert profiles[c]["age"] == 24 and profiles[c]["setup_complete"] is False  # turns 25 tomorrow
    assert profiles[d]["age"] is None and profiles[d]["_age_raw"] is None
    assert dict(rows.profiles.dtypes)["_pos"] == "bigint"

    music = rows_by_id(rows.music)
    assert {k: music[m][k] for k in ("user_id", "genre", "artist_name", "deleted_at")} == \
        {"user_id": a, "genre": "jazz", "artist_name": "Nina Simone", "deleted_at": None}
    inter = rows_by_id(rows.interactions)
    assert {k: inter[i][k] for k in ("user_id", "profile_id", "event", "deleted_at")} == \
        {"user_id": a, "profile_id": b, "event": "like", "deleted_at": None}


def test_incremental_read_returns_exactly_the_changed_rows(spark, pg_db):
    with pg_admin_connect(pg_db) as conn:
        ids = [add_profile(conn, job_title=f"job {k}") for k in range(6)]
        conn.execute("INSERT INTO music_preferences (user_id, genre) VALUES (%s, 'rock')", [ids[0]])
    first = read_postgres(spark, src_for(pg_db), None)
    since = dt.datetime.fromisoformat(first.info["watermark"])
    assert first.profiles.count() == 6

    with pg_admin_connect(pg_db) as conn:
        conn.execute("UPDATE profiles SET job_title = 'pilot' WHERE id = ANY(%s::uuid[])", [ids[:2]])
        conn.execute("UPDATE profiles SET deleted_at = now() WHERE id = %s", [ids[2]])
        conn.execute("UPDATE profiles SET banned = true WHERE id = %s", [ids[3]])
        new_like = str(conn.execute("INSERT INTO interactions (user_id, target_id, action) VALUES (%s, %s, 'like') "
                                    "RETURNING id", [ids[4], ids[5]]).fetchone()[0])

    rows = read_postgres(spark, src_for(pg_db), since)

    assert rows.complete is False
    assert dt.datetime.fromisoformat(rows.info["watermark"]) > since
    changed = rows_by_id(rows.profiles)
    assert set(changed) == set(ids[:4])
    assert [changed[x]["job_title"] for x in ids[:2]] == ["pilot", "pilot"]
    assert changed[ids[2]]["deleted_at"] is not None and changed[ids[2]]["banned"] is False
    assert changed[ids[3]]["banned"] is True and changed[ids[3]]["deleted_at"] is None
    assert rows.music.count() == 0
    assert [r["id"] for r in rows.interactions.collect()] == [new_like]

    # Nothing changed since: nothing read.
    again = read_postgres(spark, src_for(pg_db), dt.datetime.fromisoformat(rows.info["watermark"]))
    assert again.profiles.count() == 0 and again.interactions.count() == 0


def test_overlap_picks_up_a_row_stamped_before_the_mark(spark, pg_db):
    with pg_admin_connect(pg_db) as conn:  # an old row, outside any overlap
        add_profile(conn, updated_at=dt.datetime.now(UTC) - dt.timedelta(hours=1))
    since = dt.datetime.fromisoformat(read_postgres(spark, src_for(pg_db), None).info["watermark"])
    # A transaction that began before the last read and committed after it: its rows carry
    # an updated_at just before the mark (inserts set it freely; the trigger is on UPDATE).
    with pg_admin_connect(pg_db) as conn:
        late = add_profile(conn, updated_at=since - dt.timedelta(seconds=10))
    assert read_postgres(spark, src_for(pg_db, overlap=0), since).profiles.count() == 0
    picked = read_postgres(spark, src_for(pg_db, overlap=60), since).profiles.collect()
    assert [r["id"] for r in picked] == [late]


def test_reads_each_table_in_the_configured_partitions(spark, pg_db):
    with pg_admin_connect(pg_db) as conn:
        ids = [add_profile(conn) for _ in range(60)]
        for k in range(30):
            conn.execute("INSERT INTO interactions (user_id, target_id, action) VALUES (%s, %s, 'pass')",
                         [ids[k], ids[k + 1]])
    rows = read_postgres(spark, src_for(pg_db, partitions=3), None)
    for df, n in ((rows.profiles, 60), (rows.interactions, 30), (rows.music, 0)):
        assert df.rdd.getNumPartitions() == 3
        sizes = df.rdd.mapPartitions(lambda it: [sum(1 for _ in it)]).collect()
        assert sum(sizes) == n  # the buckets cover every row once
        if n:
            assert sum(1 for s in sizes if s) >= 2, sizes  # and really split the work


@pytest.mark.parametrize("url", [
    "jdbc:postgresql://127.0.0.1:54329/twotower?user=twotower&password=s3cret-pw",
    "jdbc:postgresql://127.0.0.1:54329/twotower?password=s3cret-pw",
    "jdbc:postgresql://twotower:s3cret-pw@127.0.0.1:54329/twotower",
])
def test_a_url_with_credentials_is_refused(spark, url):
    with pytest.raises(UserError) as e:
        read_postgres(spark, src_for(url), None)
    msg = str(e.value)
    assert "PGUSER" in msg and "PGPASSWORD" in msg and "s3cret-pw" not in msg and "\n" not in msg


def test_a_wrong_password_is_one_line_without_the_password(spark, pg_db, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "Wr0ng-Passw0rd")
    with pytest.raises(UserError) as e:
        read_postgres(spark, src_for(pg_db), None)
    msg = str(e.value)
    assert "password authentication failed" in msg, msg
    assert "Wr0ng-Passw0rd" not in msg and "\n" not in msg


@pytest.mark.parametrize("change, words", [
    (lambda url: url.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'),
    (lambda url: "jdbc:postgresql://127.0.0.1:1/" + url.rsplit("/", 1)[1], "cannot connect"),
])
def test_an_unreachable_database_is_a_user_error(spark, pg_db, change, words):
    with pytest.raises(UserError) as e:
        read_postgres(spark, src_for(change(pg_db)), None)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_missing_tables_are_a_user_error(spark, pg_db):
    with pg_admin_connect(pg_db) as conn:
        conn.execute("DROP TABLE interactions")
    with pytest.raises(UserError, match="public.interactions.*db/schema.sql"):
        read_postgres(spark, src_for(pg_db), None)


def test_the_trigger_moves_updated_at_on_update(pg_db):
    with pg_admin_connect(pg_db) as conn:
        pid = add_profile(conn)
        (before,) = conn.execute("SELECT updated_at FROM profiles WHERE id = %s", [pid]).fetchone()
        # Even a client that sends an old updated_at cannot hold it back.
        conn.execute("UPDATE profiles SET job_title = 'x', updated_at = '2000-01-01' WHERE id = %s", [pid])
        (after,) = conn.execute("SELECT updated_at FROM profiles WHERE id = %s", [pid]).fetchone()
        assert after > before
        mid = conn.execute("INSERT INTO music_preferences (user_id, genre) VALUES (%s, 'pop') "
                           "RETURNING id, updated_at", [pid]).fetchone()
        (moved,) = conn.execute("UPDATE music_preferences SET genre = 'rock' WHERE id = %s RETURNING updated_at",
                                [mid[0]]).fetchone()
        assert moved > mid[1]


def test_jdbc_url_becomes_a_libpq_conninfo(monkeypatch):
    info = pg.conninfo("jdbc:postgresql://db1:6543,[::1]/app%20db?sslmode=require&ApplicationName=tt"
                       "&reWriteBatchedInserts=true")
    from psycopg.conninfo import conninfo_to_dict
    d = conninfo_to_dict(info)
    assert d["host"] == "db1,::1" and d["port"] == "6543,5432" and d["dbname"] == "app db"
    assert d["sslmode"] == "require" and d["application_name"] == "tt" and "rewritebatchedinserts" not in info.lower()
    assert "password" not in d and "user" not in d
    assert pg.redact("jdbc:postgresql://u:pw@h/db?password=x") == "jdbc:postgresql://***@h/db?password=***"
