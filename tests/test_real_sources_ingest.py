"""The whole ingest (``lib.ingest.run``) on the real-data samples: Last.fm
(tests/fixtures/lastfm_sample) and Speed Dating (tests/fixtures/speeddating_sample.csv).

What reaches the lake is checked against values worked out here from the raw files with
pandas and the csv module, never from the code's output: profiles, music preferences,
interactions, quarantine, the report ``ingest.run`` returns, re-ingest idempotence (the
second MERGE rewrites nothing), a changed row, and full versus incremental reads.
"""
import csv
import os
import re
import shutil

import pandas as pd
import pytest

from lib import ingest, lake
from lib.config import gender_filter_on
from lib.errors import UserError
from lib.ids import stable_uuid
from tests.conftest import FIXTURES, make_cfg

LASTFM = os.path.join(FIXTURES, "lastfm_sample")
SPEEDDATING = os.path.join(FIXTURES, "speeddating_sample.csv")
BOOKKEEPING = ("updated_at", "ingest_run_id", "run_id")
DEFAULT_QUARANTINE_LIMIT = 0.05  # source.max_quarantine_fraction in conf/local.yaml


# --- Last.fm: what the files say --------------------------------------------------------
def tsv(folder, name, encoding="utf-8"):
    return pd.read_csv(os.path.join(folder, name), sep="\t", encoding=encoding, quoting=3, dtype=str,
                       keep_default_na=False)


def uid(u):
    return stable_uuid(f"lastfm:user:{u}")


def lastfm_expected(folder):
    """users: every userID of any file (the adapter's contract: a friend is a profile even
    without lines of their own); music: {music id: (user id, artist name)}; friends: the
    user_friends lines as (user, friend)."""
    ua, uf, ut = tsv(folder, "user_artists.dat"), tsv(folder, "user_friends.dat"), tsv(folder, "user_taggedartists.dat")
    artists = tsv(folder, "artists.dat")
    names = {a: (n.strip() or None) for a, n in zip(artists.id, artists.name)}
    users = {int(u) for col in (ua.userID, uf.userID, uf.friendID, ut.userID) for u in col}
    music = {stable_uuid(f"lastfm:artist:{int(u)}:{int(a)}"): (uid(int(u)), names.get(a))
             for u, a in zip(ua.userID, ua.artistID)}
    assert len(music) == len(ua)  # one line per (user, artist)
    friends = [(int(u), int(f)) for u, f in zip(uf.userID, uf.friendID)]
    return users, music, friends


def lastfm_cfg(lake_dir, folder=LASTFM, *more):
    return make_cfg(lake_dir, "source.kind=lastfm", f"source.path={folder}", *more)


def copy_lastfm(tmp_path, name="lastfm"):
    folder = tmp_path / name
    shutil.copytree(LASTFM, folder)
    return folder


def table(spark, lake_dir, name):
    return lake.read_table(spark, lake_dir, name)


def content(spark, lake_dir, name):
    """The table's rows as sorted JSON lines, bookkeeping columns left out."""
    df = table(spark, lake_dir, name)
    return sorted(df.drop(*[c for c in BOOKKEEPING if c in df.columns]).toJSON().collect())


def history(spark, lake_dir, name):
    return spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, name)}`").collect()


def newest_version(spark, lake_dir, name):
    return max(h["version"] for h in history(spark, lake_dir, name))


def newest_merge(spark, lake_dir, name, after_version):
    """operationMetrics (as ints) of the table's newest MERGE, which must be newer than ``after_version``."""
    merges = [h for h in history(spark, lake_dir, name) if h["operation"] == "MERGE"]
    assert merges, f"{name}: no MERGE in the table's history"
    last = max(merges, key=lambda h: h["version"])
    assert last["version"] > after_version, f"{name}: the last ingest made no MERGE"
    return {k: int(v) for k, v in last["operationMetrics"].items() if v is not None and v.isdigit()}


def assert_nothing_rewritten(metrics, name):
    got = {k: metrics.get(k) for k in ("numTargetRowsUpdated", "numTargetRowsInserted", "numTargetRowsDeleted")}
    assert got == {"numTargetRowsUpdated": 0, "numTargetRowsInserted": 0, "numTargetRowsDeleted": 0}, name


# --- 1. Last.fm into the lake (and 3. the same input again) ----------------------------
MAIN_TABLES = ("profiles", "music_preferences", "interactions")


@pytest.fixture(scope="module")
def lastfm_twice(spark, tmp_path_factory):
    """The sample ingested as run r1, the lake's state then, and the same sample again as r2.
    (One lake for the two tests below: an ingest takes a while on two cores.)"""
    lake_dir = str(tmp_path_factory.mktemp("lastfm_twice") / "lake")
    cfg = lastfm_cfg(lake_dir)
    info1 = ingest.run(spark, cfg, "r1")
    first = {t: table(spark, lake_dir, t).collect() for t in MAIN_TABLES}
    before = {t: content(spark, lake_dir, t) for t in MAIN_TABLES}
    versions = {t: newest_version(spark, lake_dir, t) for t in MAIN_TABLES}
    quarantine_after_r1 = lake.table_exists(spark, lake_dir, "quarantine")
    info2 = ingest.run(spark, cfg, "r2")
    return dict(lake_dir=lake_dir, cfg=cfg, info1=info1, first=first, before=before, versions=versions,
                quarantine_after_r1=quarantine_after_r1, info2=info2)


def test_lastfm_sample_into_the_lake(lastfm_twice):
    users, music, friends = lastfm_expected(LASTFM)
    core = {int(u) for u in tsv(LASTFM, "user_artists.dat").userID}
    assert len(core) == 15 and len(users) > len(core)  # the sample's users and their friends
    cfg, info, first = lastfm_twice["cfg"], lastfm_twice["info1"], lastfm_twice["first"]
    assert cfg.source.gender_filter == "auto" and gender_filter_on(cfg.source) is False

    # Profiles: one per user of any file, no gender, source lastfm.
    profiles = first["profiles"]
    assert len(profiles) == len(users) == info["profiles_ingested"] == info["rows_read"]
    assert {p["id"] for p in profiles} == {uid(u) for u in users}
    assert all(p["source"] == "lastfm" and p["gender"] is None and p["sexual_orientation"] is None
               and p["age"] is None and p["ingest_run_id"] == "r1" for p in profiles)
    # A friend with no lines of their own is a profile that listened to nothing.
    by_id = {p["id"]: p for p in profiles}
    assert all(by_id[uid(u)]["attributes"]["artists_listened"] == "0" for u in users - core)
    assert info["quarantined"] == 0 and info["quarantined_by_rule"] == {}

    # Music preferences: one per (user, artist) line, the artist's name from artists.dat.
    got_music = {r["id"]: (r["user_id"], r["artist_name"], r["source"]) for r in first["music_preferences"]}
    assert got_music == {k: (u, n, "lastfm") for k, (u, n) in music.items()}
    assert info["music_preferences"]["rows_in_lake"] == len(music) and info["music_preferences"]["quarantined"] == 0

    # Interactions: one 'match' per friendship line with both users profiles; every friend
    # is a profile, so no line is an orphan and nothing is quarantined.
    orphans = [(u, f) for u, f in friends if u not in users or f not in users]
    assert orphans == []
    inter = first["interactions"]
    assert sorted((r["user_id"], r["profile_id"]) for r in inter) == sorted((uid(u), uid(f)) for u, f in friends)
    assert {r["id"] for r in inter} == {stable_uuid(f"lastfm:friend:{u}:{f}") for u, f in friends}
    assert all(r["event"] == "match" and r["label"] == 1 and r["source"] == "lastfm" for r in inter)
    assert info["interactions"] == {"rows_read": len(friends), "quarantined": 0, "quarantined_by_rule": {},
                                    "rows_in_lake": len(friends)}
    assert lastfm_twice["quarantine_after_r1"] is False

    # About holdout_fraction of the positive pairs are held out; a pair's events share a side.
    pairs = {}
    for r in inter:
        pairs.setdefault((r["user_id"], r["profile_id"]), set()).add(r["split"])
    assert all(len(s) == 1 for s in pairs.values())
    held = sum(s == {"heldout"} for s in pairs.values()) / len(pairs)
    assert set().union(*pairs.values()) == {"heldout", "train"}
    assert abs(held - cfg.source.holdout_fraction) < 0.1, held


def test_lastfm_reingest_is_idempotent(spark, lastfm_twice):
    users, music, friends = lastfm_expected(LASTFM)
    lake_dir, before, versions = lastfm_twice["lake_dir"], lastfm_twice["before"], lastfm_twice["versions"]
    assert [len(before[t]) for t in MAIN_TABLES] == [len(users), len(music), len(friends)]
    assert lastfm_twice["info2"]["profiles_ingested"] == len(users)
    for t in MAIN_TABLES:
        after = content(spark, lake_dir, t)
        assert len(after) == len(before[t]), t
        assert after == before[t], t
        assert_nothing_rewritten(newest_merge(spark, lake_dir, t, versions[t]), t)
    # No row was rewritten: every row still carries the first run's id.
    for t, col in (("profiles", "ingest_run_id"), ("music_preferences", "ingest_run_id"), ("interactions", "run_id")):
        assert {r[0] for r in table(spark, lake_dir, t).select(col).distinct().collect()} == {"r1"}, t


def test_lastfm_too_many_bad_lines_fails_and_writes_only_quarantine(spark, lake_dir, tmp_path):
    """Past source.max_quarantine_fraction the ingest fails: quarantine written, no main table.
    (No Last.fm line can be an orphan: every userID of any file is a profile. Unparseable
    lines are what a Last.fm read can quarantine.)"""
    users, music, friends = lastfm_expected(LASTFM)
    folder = copy_lastfm(tmp_path)
    # Enough unparseable friendship lines to pass 5% of the profile rows (users + bad lines).
    n_bad = next(n for n in range(1, 100) if n / (len(users) + n) > DEFAULT_QUARANTINE_LIMIT) + 2
    with open(folder / "user_friends.dat", "a") as f:
        for i in range(n_bad):
            f.write(f"2\tfriend-{i}\n")
    with pytest.raises(UserError, match=rf"{n_bad} of {len(users) + n_bad} rows of profiles .*failed validation"):
        ingest.run(spark, lastfm_cfg(lake_dir, folder), "r1")
    for name in ("profiles", "music_preferences", "interactions"):
        assert not lake.table_exists(spark, lake_dir, name), name
    q = table(spark, lake_dir, "quarantine").collect()
    assert len(q) == n_bad
    assert all(r["run_id"] == "r1" and r["rule"] == "malformed_row" and r["entity"] == "profiles"
               and r["source"] == "lastfm" and "user_friends.dat: 2\\tfriend-" in r["raw"] for r in q)
    assert not os.path.exists(os.path.join(lake_dir, "_staging", "r1"))


# --- 2. Speed Dating into the lake ------------------------------------------------------
def speeddating_expected(path):
    """From the CSV: {person name: age rule or None}, [(from name, to name, event)]."""
    with open(path, encoding="latin-1", newline="") as f:
        rows = list(csv.DictReader(f))
    ages = {}  # person name -> age as written (own rows: the first one; partners: first age_o given)
    for r in rows:
        ages.setdefault(f"speeddating:iid:{r['iid']}", r["age"])
    own = set(ages)
    slots = {(r["wave"], r["id"], r["gender"]) for r in rows}
    slots |= {(r["wave"], r["partner"], str(1 - int(r["gender"]))) for r in rows if r["pid"]}
    partners = {}
    for r in rows:
        if r["pid"]:
            name = f"speeddating:iid:{r['pid']}"
        else:
            opposite = str(1 - int(r["gender"]))
            if (r["wave"], r["partner"], opposite) in slots:
                continue
            name = f"speeddating:wave:{r['wave']}:partner:{r['partner']}:gender:{opposite}"
        if name not in own and (not partners.get(name)):
            partners[name] = r["age_o"]
    ages.update(partners)

    def rule(age):
        if age == "":
            return "age_missing"
        if not re.fullmatch(r"[0-9]{1,3}", age):
            return "age_not_a_number"
        return "age_under_18" if int(age) < 18 else "age_over_100" if int(age) > 100 else None

    persons = {name: rule(a) for name, a in ages.items()}
    dates = {(r["iid"], r["pid"]) for r in rows}
    events = []
    for r in rows:
        if not r["pid"]:
            continue
        sides = [(r["iid"], r["pid"], r["dec"])]
        if (r["pid"], r["iid"]) not in dates:  # the partner's decision, where they have no row
            sides.append((r["pid"], r["iid"], r["dec_o"]))
        for a, b, dec in sides:
            a, b = f"speeddating:iid:{a}", f"speeddating:iid:{b}"
            if dec in ("0", "1"):
                events.append((a, b, {"1": "like", "0": "pass"}[dec]))
            if r["match"] == "1":
                events.append((a, b, "match"))
    return persons, events


def test_speeddating_sample_into_the_lake(spark, lake_dir):
    persons, events = speeddating_expected(SPEEDDATING)
    bad_people = {n: r for n, r in persons.items() if r is not None}
    good_people = set(persons) - set(bad_people)
    assert "age_missing" in bad_people.values()
    kept, orphan = [], {}
    for a, b, ev in events:
        rule = "orphan_user" if a in bad_people else "orphan_profile" if b in bad_people else None
        if rule:
            orphan[rule] = orphan.get(rule, 0) + 1
        else:
            kept.append((stable_uuid(a), stable_uuid(b), ev))
    assert orphan  # the people without an age acted and were acted on
    profile_rules = {}
    for r in bad_people.values():
        profile_rules[r] = profile_rules.get(r, 0) + 1
    shares = (len(bad_people) / len(persons), sum(orphan.values()) / len(events))

    if max(shares) > DEFAULT_QUARANTINE_LIMIT:
        # With the default limit the ingest fails and writes only the quarantine.
        with pytest.raises(UserError, match="failed validation, more than source.max_quarantine_fraction=0.05"):
            ingest.run(spark, make_cfg(lake_dir, "source.kind=speeddating", f"source.path={SPEEDDATING}"), "r0")
        for name in ("profiles", "interactions"):
            assert not lake.table_exists(spark, lake_dir, name), name
        assert table(spark, lake_dir, "quarantine").where("run_id = 'r0'").count() == \
            len(bad_people) + sum(orphan.values())

    cfg = make_cfg(lake_dir, "source.kind=speeddating", f"source.path={SPEEDDATING}",
                   "source.max_quarantine_fraction=0.5")
    assert gender_filter_on(cfg.source) is True
    info = ingest.run(spark, cfg, "r1")

    assert info["rows_read"] == len(persons)
    assert info["quarantined_by_rule"] == profile_rules
    assert info["profiles_ingested"] == len(good_people)
    profiles = table(spark, lake_dir, "profiles").collect()
    assert {p["id"] for p in profiles} == {stable_uuid(n) for n in good_people}
    assert all(p["source"] == "speeddating" and p["gender"] in ("male", "female") for p in profiles)

    assert info["interactions"]["rows_read"] == len(events)
    assert info["interactions"]["quarantined_by_rule"] == orphan
    inter = table(spark, lake_dir, "interactions").collect()
    assert info["interactions"]["rows_in_lake"] == len(inter) == len(kept)
    assert sorted((r["user_id"], r["profile_id"], r["event"]) for r in inter) == sorted(kept)
    for ev in ("like", "pass", "match"):
        assert sum(r["event"] == ev for r in inter) == sum(k[2] == ev for k in kept), ev
    assert all(r["label"] == {"like": 1, "match": 1, "pass": 0}[r["event"]] for r in inter)
    assert all(r["split"] == "train" for r in inter if r["label"] == 0)
    # A pair's like and match are on the same side; about holdout_fraction of pairs held out.
    sides = {}
    for r in inter:
        if r["label"] == 1:
            sides.setdefault((r["user_id"], r["profile_id"]), set()).add(r["split"])
    assert any(len([r for r in inter if (r["user_id"], r["profile_id"]) == p]) == 2 for p in sides)
    assert all(len(s) == 1 for s in sides.values())
    held = sum(s == {"heldout"} for s in sides.values()) / len(sides)
    assert abs(held - cfg.source.holdout_fraction) < 0.12, held

    q = table(spark, lake_dir, "quarantine").where("run_id = 'r1'").collect()
    qp = [r for r in q if r["entity"] == "profiles"]
    assert sorted((r["rule"], tuple(r["person_ids"])) for r in qp) == \
        sorted((rule, (stable_uuid(n),)) for n, rule in bad_people.items())
    qi = [r for r in q if r["entity"] == "interactions"]
    assert len(qi) == sum(orphan.values()) and len(q) == len(qp) + len(qi)
    bad_ids = {stable_uuid(n) for n in bad_people}
    for r in qi:
        user, prof = r["person_ids"]
        assert r["rule"] == ("orphan_user" if user in bad_ids else "orphan_profile")
        assert {user, prof} & bad_ids


# --- 4. a changed row is updated, and only it -------------------------------------------
def test_lastfm_changed_artist_name_updates_one_row(spark, lake_dir, tmp_path):
    folder = copy_lastfm(tmp_path)
    ua = tsv(LASTFM, "user_artists.dat")
    listeners = ua.groupby("artistID").userID.apply(list)
    artist = next(a for a, us in listeners.items() if len(us) == 1)  # named on exactly one music row
    user = int(listeners[artist][0])
    ingest.run(spark, lastfm_cfg(lake_dir, folder), "r1")
    versions = {t: newest_version(spark, lake_dir, t) for t in MAIN_TABLES}

    lines = (folder / "artists.dat").read_text(encoding="utf-8").split("\n")
    changed = [i for i, ln in enumerate(lines) if ln.split("\t")[0] == artist]
    assert len(changed) == 1
    fields = lines[changed[0]].split("\t")
    old_name, new_name = fields[1], fields[1] + " (Remastered)"
    lines[changed[0]] = "\t".join([fields[0], new_name, *fields[2:]])
    (folder / "artists.dat").write_text("\n".join(lines), encoding="utf-8")

    ingest.run(spark, lastfm_cfg(lake_dir, folder), "r2")
    m = newest_merge(spark, lake_dir, "music_preferences", versions["music_preferences"])
    assert (m.get("numTargetRowsUpdated"), m.get("numTargetRowsInserted"), m.get("numTargetRowsDeleted")) == (1, 0, 0)
    for t in ("profiles", "interactions"):
        assert_nothing_rewritten(newest_merge(spark, lake_dir, t, versions[t]), t)
    row_id = stable_uuid(f"lastfm:artist:{user}:{int(artist)}")
    rows = table(spark, lake_dir, "music_preferences")
    got = rows.where(rows.id == row_id).collect()
    assert [(r["artist_name"], r["ingest_run_id"]) for r in got] == [(new_name.strip(), "r2")]
    assert rows.where(rows.artist_name == old_name.strip()).count() == 0
    assert rows.where(rows.ingest_run_id == "r2").count() == 1
    assert rows.count() == len(ua)


# --- 5. full reads erase what the source no longer has; incremental ones do not ----------
def test_lastfm_full_read_erases_a_removed_user_incremental_keeps_them(spark, lake_dir, tmp_path):
    users, music, friends = lastfm_expected(LASTFM)
    folder = copy_lastfm(tmp_path)
    ingest.run(spark, lastfm_cfg(lake_dir, folder), "r1")

    # One sample user's lines leave every file (and with them, friends only they listed):
    # the one with the most such friends, so that the default erase limit is passed.
    uf = tsv(LASTFM, "user_friends.dat")
    only_theirs = uf[~uf.friendID.duplicated(keep=False)].groupby("userID").size()
    gone_user = int(only_theirs.idxmax())
    for name, cols in (("user_artists.dat", ("userID",)), ("user_taggedartists.dat", ("userID",)),
                       ("user_friends.dat", ("userID", "friendID"))):
        df = tsv(LASTFM, name)
        keep = pd.Series(True, index=df.index)
        for c in cols:
            keep &= df[c].astype(int) != gone_user
        assert (~keep).any(), name
        df[keep].to_csv(folder / name, sep="\t", index=False, quoting=3)
    users2, music2, friends2 = lastfm_expected(str(folder))
    absent = users - users2
    assert gone_user in absent and users2 <= users
    assert len(music2) < len(music) and len(friends2) < len(friends)

    def lake_state():
        p = {r["id"] for r in table(spark, lake_dir, "profiles").collect()}
        m = {r["id"]: r["user_id"] for r in table(spark, lake_dir, "music_preferences").collect()}
        i = [(r["user_id"], r["profile_id"]) for r in table(spark, lake_dir, "interactions").collect()]
        return p, m, i

    # Incremental (the default): what the read lacks stays.
    ingest.run(spark, lastfm_cfg(lake_dir, folder), "r2")
    p, m, i = lake_state()
    assert p == {uid(u) for u in users} and set(m) == set(music) and len(i) == len(friends)
    assert uid(gone_user) in p and uid(gone_user) in set(m.values())

    # Full, with the default limit (0.1): refused, too large a share would be erased.
    share = len(absent) / len(users)
    assert share > 0.1
    versions = {t: newest_version(spark, lake_dir, t) for t in MAIN_TABLES}
    with pytest.raises(UserError, match=rf"lacks {len(absent)} of the lake's {len(users)} lastfm profiles"):
        ingest.run(spark, lastfm_cfg(lake_dir, folder, "source.mode=full"), "r3")
    assert {t: newest_version(spark, lake_dir, t) for t in MAIN_TABLES} == versions

    # Full, with the limit raised enough: the removed user (and friends only they had) leave
    # profiles, music preferences and interactions in both directions.
    info = ingest.run(spark, lastfm_cfg(lake_dir, folder, "source.mode=full",
                                        f"source.max_erase_fraction={min(1.0, share + 0.05):.3f}"), "r4")
    assert info["complete_read"] is True and info["erased_accounts"] == len(absent)
    p, m, i = lake_state()
    gone = {uid(u) for u in absent}
    assert p == {uid(u) for u in users2}
    assert set(m) == set(music2) and not set(m.values()) & gone
    assert sorted(i) == sorted((uid(u), uid(f)) for u, f in friends2)
    assert not {x for pair in i for x in pair} & gone


def test_a_source_without_genders_never_shares_a_lake_with_one_that_has_them(spark, lake_dir):
    ingest.run(spark, make_cfg(lake_dir, "source.num_profiles=50"), "r1")
    before = lake.read_table(spark, lake_dir, "profiles").count()
    with pytest.raises(UserError, match="holds profiles of source synthetic; source lastfm has no genders"):
        ingest.run(spark, lastfm_cfg(lake_dir), "r2")
    assert lake.read_table(spark, lake_dir, "profiles").count() == before


def test_an_incremental_reads_bad_share_is_measured_against_the_table():
    from lib.ingest import _check_limits
    counts = {"profiles": {None: 10, "age_under_18": 1}}
    _check_limits(counts, 0.05, "r", {"profiles": 1000})  # 1 of 1,011: fine
    with pytest.raises(UserError, match=r"1 of 11 rows of profiles"):
        _check_limits(counts, 0.05, "r")  # a whole read of 11 rows: 9%
