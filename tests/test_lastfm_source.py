"""The Last.fm adapter on real rows: tests/fixtures/lastfm_sample (15 users of the HetRec
2011 Last.fm 2K files with all their lines in user_artists, user_taggedartists and
user_friends, and only the artists and tags those lines name) and, when present, the
full folder in ../shared/datasets/lastfm.

Expected values are worked out here from the raw files with pandas, never from the
adapter's output.
"""
import os
import re
import shutil
from datetime import date

import pandas as pd
import pytest

from lib.errors import UserError
from lib.ids import stable_uuid
from lib.sources.lastfm import NON_GENRE_TAGS, read_lastfm
from tests.conftest import FIXTURES, ROOT

SAMPLE = os.path.join(FIXTURES, "lastfm_sample")
FULL = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "lastfm")
FILES = ("user_artists.dat", "artists.dat", "tags.dat", "user_taggedartists.dat", "user_friends.dat")


def tsv(folder, name, encoding="utf-8"):
    return pd.read_csv(os.path.join(folder, name), sep="\t", encoding=encoding, quoting=3, dtype=str,
                       keep_default_na=False)


def expected(folder):
    """What the files say, in plain pandas: {user: (created_at date, artists, friends)},
    [(user, artist, artist name, genre) per user_artists line], [(user, friend) per line]."""
    ua, uf = tsv(folder, "user_artists.dat"), tsv(folder, "user_friends.dat")
    ut, tags = tsv(folder, "user_taggedartists.dat"), tsv(folder, "tags.dat", "latin-1")
    names = dict(zip(tsv(folder, "artists.dat").id, tsv(folder, "artists.dat").name))
    tags["v"] = tags.tagValue.str.strip().str.lower()
    decade_or_year = tags.v.map(lambda v: bool(re.fullmatch(r"[0-9]0'?s|(19|20)[0-9][0-9]", v)))
    genre_tags = tags[(tags.v != "") & ~tags.v.isin(NON_GENRE_TAGS) & ~decade_or_year]
    t = ut.merge(genre_tags[["tagID", "v"]], on="tagID")
    t["tag"] = t.tagID.astype(int)
    per = t.groupby(["artistID", "v"]).agg(n=("tag", "size"), tag=("tag", "min")).reset_index()
    per = per.sort_values(["artistID", "n", "tag"], ascending=[True, False, True]).drop_duplicates("artistID")
    genre = dict(zip(per.artistID, per.v))

    users = {}
    for u in set(ua.userID) | set(uf.userID) | set(uf.friendID) | set(ut.userID):
        users[int(u)] = [None, 0, 0]
    for r in ut.itertuples():
        if int(r.year) >= 2002:  # Last.fm did not exist before: 1956 etc. are typos
            d = date(int(r.year), int(r.month), int(r.day))
            cur = users[int(r.userID)][0]
            users[int(r.userID)][0] = d if cur is None or d < cur else cur
    for u in ua.userID:
        users[int(u)][1] += 1
    for u in uf.userID:
        users[int(u)][2] += 1
    music = [(int(r.userID), int(r.artistID), names.get(r.artistID), genre.get(r.artistID)) for r in ua.itertuples()]
    friends = [(int(r.userID), int(r.friendID)) for r in uf.itertuples()]
    return users, music, friends


def check_against_files(rows, folder):
    users, music, friends = expected(folder)
    profiles = rows.profiles.collect()
    assert all(p["_corrupt_record"] is None for p in profiles)
    got = {p["id"]: p for p in profiles}
    assert len(got) == len(profiles) == len(users)  # ids unique
    assert rows.info["users"] == len(users) and rows.info["malformed_lines"] == 0
    for u, (created, n_artists, n_friends) in users.items():
        p = got[stable_uuid(f"lastfm:user:{u}")]
        assert (p["created_at"].date() if p["created_at"] else None) == created
        assert p["attributes"] == {"artists_listened": str(n_artists), "friends": str(n_friends)}
        assert p["setup_complete"] is True and p["age"] is None and p["_age_raw"] is None
        assert p["_pos"] == u
        for col in ("gender", "sexual_orientation", "name", "bio", "interests"):
            assert col not in rows.profiles.columns or p[col] is None

    m = rows.music.collect()
    got_m = {r["id"]: r for r in m}
    assert len(got_m) == len(m) == len(music)
    for pos, (u, a, name, genre) in enumerate(music):
        r = got_m[stable_uuid(f"lastfm:artist:{u}:{a}")]
        assert (r["user_id"], r["artist_name"], r["genre"], r["_pos"]) == \
            (stable_uuid(f"lastfm:user:{u}"), name, genre, pos)

    i = rows.interactions.collect()
    got_i = {r["id"]: r for r in i}
    assert len(got_i) == len(i) == len(friends)
    for pos, (u, f) in enumerate(friends):
        r = got_i[stable_uuid(f"lastfm:friend:{u}:{f}")]
        assert (r["user_id"], r["profile_id"], r["event"], r["created_at"], r["_pos"]) == \
            (stable_uuid(f"lastfm:user:{u}"), stable_uuid(f"lastfm:user:{f}"), "match", None, pos)
    return got, got_m


def test_sample_matches_the_files(spark, tmp_path):
    rows = read_lastfm(spark, SAMPLE, str(tmp_path))
    assert rows.complete is True
    profiles, music = check_against_files(rows, SAMPLE)
    # 15 users with all their lines; their friends outside the sample are profiles too.
    assert len(profiles) > 15

    def genre(user, artist):
        return music[stable_uuid(f"lastfm:artist:{user}:{artist}")]["genre"]

    # Worked out by hand from the sample's user_taggedartists.dat:
    assert genre(2, 52) == "chillout"      # Morcheeba: chillout, downtempo, trip-hop twice each: smallest tagID (13)
    assert genre(2, 51) == "new wave"      # Duran Duran: "new wave" and "80s" twice each; 80s is a decade
    assert genre(331, 5750) == "folk rock"  # seven tags once each: the smallest tagID (528)
    assert genre(2, 55) is None            # Kylie Minogue: only "seen live"
    assert genre(8, 344) is None           # Taylor Swift: only "female vocalists"
    assert genre(1822, 16875) == "rock"     # Bankrupt: 48 tags once each, "rock" has the smallest tagID (73)
    assert genre(5, 231) == "español"       # Devendra Banhart: tagged once, "español" (latin-1 in tags.dat)
    # User 43 tagged once in "1956": ignored, the next date is the profile's creation.
    assert profiles[stable_uuid("lastfm:user:43")]["created_at"].date() == date(2010, 4, 1)


def test_ids_are_stable_across_reads(spark, tmp_path):
    a = read_lastfm(spark, SAMPLE, str(tmp_path / "a"))
    b = read_lastfm(spark, SAMPLE, str(tmp_path / "b"))
    for part in ("profiles", "music", "interactions"):
        ids_a = sorted(r["id"] for r in getattr(a, part).select("id").collect())
        ids_b = sorted(r["id"] for r in getattr(b, part).select("id").collect())
        assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)


@pytest.mark.skipif(not os.path.isdir(FULL), reason="../shared/datasets/lastfm is not here")
def test_full_folder(spark, tmp_path):
    rows = read_lastfm(spark, FULL, str(tmp_path))
    profiles, music = check_against_files(rows, FULL)
    assert len(profiles) == 1892 and len(music) == 92834
    assert rows.interactions.count() == 25434
    # The file lists every friendship in both directions (so two match events per pair).
    pairs = set(expected(FULL)[2])
    assert all((f, u) in pairs for u, f in pairs)


def copy_sample(tmp_path):
    folder = tmp_path / "lastfm"
    shutil.copytree(SAMPLE, folder)
    return folder


def test_missing_folder(spark, tmp_path):
    with pytest.raises(UserError, match="not found; set source.path to the folder"):
        read_lastfm(spark, str(tmp_path / "nowhere"), str(tmp_path))


def test_a_file_instead_of_the_folder(spark, tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        read_lastfm(spark, os.path.join(SAMPLE, "tags.dat"), str(tmp_path))


def test_missing_file(spark, tmp_path):
    folder = copy_sample(tmp_path)
    os.remove(folder / "tags.dat")
    with pytest.raises(UserError, match=r"lacks tags\.dat; it needs all of user_artists\.dat"):
        read_lastfm(spark, str(folder), str(tmp_path))


def test_missing_column(spark, tmp_path):
    folder = copy_sample(tmp_path)
    text = (folder / "user_friends.dat").read_text()
    (folder / "user_friends.dat").write_text(text.replace("userID\tfriendID", "userID\tbuddy", 1))
    with pytest.raises(UserError, match=r"user_friends\.dat' lacks the column\(s\) friendID .*tab-separated"):
        read_lastfm(spark, str(folder), str(tmp_path))


def test_empty_file(spark, tmp_path):
    folder = copy_sample(tmp_path)
    (folder / "user_artists.dat").write_text("")
    with pytest.raises(UserError, match="has no header line"):
        read_lastfm(spark, str(folder), str(tmp_path))


def test_artists_not_utf8(spark, tmp_path):
    folder = copy_sample(tmp_path)
    with open(folder / "artists.dat", "ab") as f:
        f.write("99999\tMot\xf6rhead\turl\tpic\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_lastfm(spark, str(folder), str(tmp_path))


def test_malformed_lines_go_to_profiles_as_corrupt(spark, tmp_path):
    folder = copy_sample(tmp_path)
    n_lines = len(tsv(SAMPLE, "user_friends.dat"))
    with open(folder / "user_friends.dat", "a") as f:
        f.write("7\tabc\n7\n")
    rows = read_lastfm(spark, str(folder), str(tmp_path))
    bad = sorted(r["_corrupt_record"] for r in rows.profiles.where("_corrupt_record is not null").collect())
    assert len(bad) == 2 and rows.info["malformed_lines"] == 2
    assert all(b.startswith("user_friends.dat: 7") for b in bad) and any("abc" in b for b in bad)
    assert rows.interactions.count() == n_lines
