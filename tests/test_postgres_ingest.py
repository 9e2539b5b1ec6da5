"""ingest from the app's Postgres, end to end against a real server: a first full read, an
incremental one that sees only what changed, soft deletes and bans erased from the lake,
hard deletes found by a full read, credentials kept out of the logs."""
import datetime as dt
import logging

from lib import ingest, lake
from tests.conftest import make_cfg, pg_admin_connect, pg_password


def add(conn, table, **row):
    cols, marks = ", ".join(row), ", ".join(["%s"] * len(row))
    return str(conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id",
                            list(row.values())).fetchone()[0])


def person(conn, gender, seeks, born=1990):
    return add(conn, "profiles", name="Secret Name", bio="secret bio", avatar_url="https://x.invalid/a.png",
               setup_complete=True, gender=gender, sexual_orientation="straight", looking_for=[seeks],
               birth_date=dt.date(born, 1, 1), interests=["hiking"])


def table(spark, lake_dir, name):
    return {r["id"]: r.asDict() for r in lake.read_table(spark, lake_dir, name).collect()}


def test_postgres_ingest_incremental_deletes_and_full_reads(spark, lake_dir, pg_db, caplog):
    caplog.set_level(logging.INFO)
    with pg_admin_connect(pg_db) as conn:
        women = [person(conn, "female", "male") for _ in range(6)]
        men = [person(conn, "male", "female") for _ in range(6)]
        music = [add(conn, "music_preferences", user_id=u, genre="jazz", artist_name=f"A{i}")
                 for i, u in enumerate(women + men)]
        likes = [add(conn, "interactions", user_id=w, target_id=m, action="like") for w, m in zip(women, men)]
        block = add(conn, "interactions", user_id=men[0], target_id=women[1], action="block")
    cfg = make_cfg(lake_dir, "source.kind=postgres", f"source.url={pg_db}", "source.overlap_seconds=0")

    first = ingest.run(spark, cfg, "r1")
    assert first["profiles_ingested"] == 12 and first["mode"] == "full"
    assert first["music_preferences"]["rows_in_lake"] == 12 and first["interactions"]["rows_in_lake"] == 7
    profiles = table(spark, lake_dir, "profiles")
    assert set(profiles) == set(women + men)
    assert all(p["name"] is None and p["bio"] is None and p["avatar_url"] is None for p in profiles.values())
    inter = table(spark, lake_dir, "interactions")
    assert {i: (r["event"], r["label"]) for i, r in inter.items()} == {
        **{i: ("like", 1) for i in likes}, block: ("block", None)}
    lake.record_run(spark, lake_dir, "ingest", "r1", "", first)  # what run_stages does after a success

    with pg_admin_connect(pg_db) as conn:
        conn.execute("UPDATE profiles SET interests = %s WHERE id = %s", (["chess"], women[2]))
        conn.execute("UPDATE profiles SET deleted_at = now() WHERE id = %s", (women[0],))
        conn.execute("UPDATE profiles SET banned = true WHERE id = %s", (men[3],))
        conn.execute("UPDATE interactions SET deleted_at = now() WHERE id = %s", (likes[4],))
        new_like = add(conn, "interactions", user_id=women[5], target_id=men[1], action="like")
    second = ingest.run(spark, cfg, "r2")
    assert second["mode"] == "incremental"
    # Only what changed was read: 3 profiles, 2 interactions, no music.
    assert second["rows_read"] == 3
    assert second["interactions"]["rows_read"] == 2 and second["music_preferences"]["rows_read"] == 0
    assert second["erased_accounts"] == 2
    profiles = table(spark, lake_dir, "profiles")
    gone = {women[0], men[3]}
    assert set(profiles) == set(women + men) - gone
    assert profiles[women[2]]["interests"] == ["chess"]
    music_users = {r["user_id"] for r in table(spark, lake_dir, "music_preferences").values()}
    assert music_users == set(women + men) - gone
    inter = table(spark, lake_dir, "interactions")
    expected = {likes[1], likes[2], likes[5], block, new_like}  # likes[0]: women[0]; likes[3]: men[3]; likes[4] deleted
    assert set(inter) == expected
    lake.record_run(spark, lake_dir, "ingest", "r2", "", second)

    # A hard DELETE in the app is invisible to an incremental read; a full read finds it.
    with pg_admin_connect(pg_db) as conn:
        conn.execute("DELETE FROM interactions WHERE user_id = %s OR target_id = %s", (men[5], men[5]))
        conn.execute("DELETE FROM music_preferences WHERE user_id = %s", (men[5],))
        conn.execute("DELETE FROM profiles WHERE id = %s", (men[5],))
    ingest.run(spark, cfg, "r3")
    assert men[5] in table(spark, lake_dir, "profiles")
    full = make_cfg(lake_dir, "source.kind=postgres", f"source.url={pg_db}", "source.mode=full",
                    "source.max_erase_fraction=0.2")
    third = ingest.run(spark, full, "r4")
    assert third["erased_accounts"] == 3  # men[5] gone, and the two still marked deleted or banned
    assert set(table(spark, lake_dir, "profiles")) == set(women + men) - gone - {men[5]}
    inter = table(spark, lake_dir, "interactions")
    assert set(inter) == expected - {likes[5]}  # likes[5] was women[5] -> men[5]
    # Credentials never reach the logs; names and bios neither.
    text = caplog.text
    assert pg_password() not in text and "Secret Name" not in text and "secret bio" not in text
