"""Parsing real messy values and encoding one profile, checked against values worked out by hand."""
import datetime as dt
import logging
import math
import zlib

import numpy as np
import pytest

from lib.errors import UserError
from lib.features import parse
from lib.features.preprocessor import Preprocessor, check_columns

AS_OF = dt.datetime(2026, 12, 1, 10, 0)


def test_languages_drop_fluency_modifiers():
    assert parse.languages(parse.text("English (fluently), Spanish (poorly)")) == ["english", "spanish"]
    assert parse.languages(parse.text("english, c++ (okay), english")) == ["c++", "english"]
    assert parse.languages(None) == []


@pytest.mark.parametrize("raw, expected", [
    ("agnosticism and very serious about it", ("agnosticism", "very serious")),
    ("catholicism but not too serious about it", ("catholicism", "not too serious")),
    ("atheism and laughing about it", ("atheism", "laughing")),
    ("christianity", ("christianity", None)),
    ("gemini and it&rsquo;s fun to think about", ("gemini", "it's fun to think about")),
    ("virgo but it doesn&rsquo;t matter", ("virgo", "it doesn't matter")),
])
def test_religion_and_sign_split_from_their_modifier(raw, expected):
    assert parse.with_modifier(parse.text(raw)) == expected


# Every offspring phrase of the OkCupid file, read by hand.
@pytest.mark.parametrize("raw, expected", [
    ("doesn&rsquo;t have kids", ("none", None)),
    ("doesn&rsquo;t have kids, but might want them", ("none", "maybe")),
    ("doesn&rsquo;t have kids, but wants them", ("none", "yes")),
    ("doesn&rsquo;t want kids", (None, "no")),
    ("has kids", ("has", None)),
    ("has a kid", ("has", None)),
    ("doesn&rsquo;t have kids, and doesn&rsquo;t want any", ("none", "no")),
    ("has kids, but doesn&rsquo;t want more", ("has", "no")),
    ("has a kid, but doesn&rsquo;t want more", ("has", "no")),
    ("has a kid, and might want more", ("has", "maybe")),
    ("wants kids", (None, "yes")),
    ("might want kids", (None, "maybe")),
    ("has kids, and might want more", ("has", "maybe")),
    ("has a kid, and wants more", ("has", "yes")),
    ("has kids, and wants more", ("has", "yes")),
])
def test_offspring_phrases(raw, expected):
    assert parse.offspring(parse.text(raw)) == expected


def test_pets_diet_education_phrases():
    assert parse.pets(parse.text("likes dogs and has cats")) == ["has cats", "likes dogs"]
    assert parse.pets(parse.text("dislikes cats")) == ["dislikes cats"]
    assert parse.diet(parse.text("Mostly Vegetarian")) == ("vegetarian", "mostly")
    assert parse.diet("vegan") == ("vegan", None)
    assert parse.education("working on masters program") == ("masters program", "working on")
    assert parse.education("bachelors") == ("bachelors", None)


def test_text_decodes_entities_and_normalises():
    assert parse.text("  Doesn&rsquo;t   MATTER ") == "doesn't matter"
    assert parse.text("Doesn\u2019t matter") == "doesn't matter"
    assert parse.text("   ") is None and parse.text(float("nan")) is None
    assert parse.number("69,487.00") == 69487.0 and parse.number("abc") is None and parse.number("inf") is None


def test_music_count_entropy_dominant():
    count, entropy, dominant = parse.music_stats(["rock", "Rock", "jazz", "folk"])
    assert count == 3 and dominant == "rock"
    # shares 1/2, 1/4, 1/4
    assert entropy == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert parse.music_stats(["jazz", "rock"])[2] == "jazz"  # a tie goes to the first by name
    assert parse.music_stats([]) == (None, None, None)
    assert parse.by_count(["b", "a", "b", "c", "a", "b"]) == ["b", "a", "c"]


def test_time_features():
    p = parse.parse_profile({"id": "x", "created_at": dt.datetime(2026, 11, 24, 10, 0)}, AS_OF, new_user_days=30)
    # 2026-11-24 is a Tuesday; 7 days before AS_OF.
    assert p.cats["signup_weekday"] == "tue"
    assert p.nums["tenure_days"] == pytest.approx(math.log1p(7.0))
    assert p.flags["new_user"] == 1
    old = parse.parse_profile({"id": "y", "created_at": "2025-12-01T10:00:00Z"}, AS_OF, new_user_days=30)
    assert old.nums["tenure_days"] == pytest.approx(math.log1p(365.0)) and old.flags["new_user"] == 0
    none = parse.parse_profile({"id": "z"}, AS_OF, 30)
    assert none.nums["tenure_days"] is None and none.flags["new_user"] == 0 and none.cats["signup_weekday"] is None


def test_out_of_range_values_clipped_by_named_rules():
    p = parse.parse_profile({"id": "x", "age": 150, "height": 40.0, "created_at": dt.datetime(2027, 1, 1),
                             "latitude": 95.0, "longitude": 10.0}, AS_OF, 30)
    assert sorted(p.clipped) == ["age_out_of_range", "coordinates_out_of_range", "created_at_in_future",
                                 "height_out_of_range"]
    assert p.nums["age"] == 100.0 and p.cats["age_bin"] == "55+" and p.nums["height"] == 120.0
    assert p.nums["tenure_days"] == 0.0 and p.latitude is None and p.longitude is None


def test_private_and_sensitive_values_never_parsed():
    p = parse.parse_profile({"id": "x", "name": "Alice Example", "bio": "secret bio", "avatar_url": "http://a/b.jpg",
                             "attributes": {"ethnicity": "asian, white", "race": "2", "zipcode": "94110",
                                            "from": "Oakland", "i_sports": "9", "income": "-1"}}, AS_OF, 30)
    text = repr(p)
    for secret in ("Alice", "secret bio", "b.jpg", "asian", "94110", "oakland"):
        assert secret not in text
    assert p.nums["income"] is None  # OkCupid's -1 means not said


def test_unknown_and_missing_columns(caplog):
    with pytest.raises(UserError, match="no column 'created_at'"):
        check_columns(["id", "gender", "sexual_orientation", "age"], "profiles table")
    with caplog.at_level(logging.WARNING):
        check_columns(["id", "gender", "sexual_orientation", "age", "created_at", "favourite_colour", "bio"], "p")
    assert "favourite_colour" in caplog.text and "bio" not in caplog.text


def hand_preprocessor():
    return Preprocessor(
        version="v", fitted_at=AS_OF.isoformat(), new_user_days=30,
        one_hot={"gender": ["female", "male"]},
        multi_hot={"interests": ["hiking", "chess"]},
        bags={"city": {"vocab": ["oakland", "berkeley"], "buckets": 7, "length": 1},
              "artists": {"vocab": ["a1"], "buckets": 5, "length": 2}},
        numeric={"age": [30.0, 5.0]}, flags=["new_user"])


def test_encode_one_profile_by_hand():
    pre = hand_preprocessor()
    assert pre.feature_names() == [
        "cat:gender=<missing>", "cat:gender=<other>", "cat:gender=female", "cat:gender=male",
        "multi:interests=<missing>", "multi:interests=<other>", "multi:interests=hiking", "multi:interests=chess",
        "bag:artists=<missing>", "bag:city=<missing>", "num:age", "num:age=<missing>", "flag:new_user"]
    dense, ids = pre.transform_one({"id": "p", "gender": "Male", "sexual_orientation": None, "age": 40,
                                    "created_at": dt.datetime(2026, 11, 20), "location": "Fresno",
                                    "interests": ["chess", "surfing"]},
                                   music=[{"genre": "rock", "artist_name": "zz"}, {"genre": "rock", "artist_name": "a1"},
                                          {"genre": "rock", "artist_name": "zz"}], as_of=AS_OF)
    np.testing.assert_array_equal(dense, np.array([0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 2.0, 0, 1], dtype=np.float32))
    # Bags: artists layout first (sorted), most played first: zz (unseen: hashed), a1 (id 1).
    zz = 1 + 1 + zlib.crc32(b"artists\x1fzz") % 5
    fresno = 2 + 1 + zlib.crc32(b"city\x1ffresno") % 7
    np.testing.assert_array_equal(ids, np.array([zz, 1, fresno], dtype=np.int32))
    assert pre.bag_layout() == [{"field": "artists", "start": 0, "length": 2, "size": 7},
                                {"field": "city", "start": 2, "length": 1, "size": 10}]


def test_missing_values_imputed_with_indicators():
    pre = hand_preprocessor()
    dense, ids = pre.transform_one({"id": "p", "gender": None, "sexual_orientation": None, "age": None,
                                    "created_at": None}, as_of=AS_OF)
    names = pre.feature_names()
    on = {names[i] for i in np.flatnonzero(dense)}
    assert on == {"cat:gender=<missing>", "multi:interests=<missing>", "bag:artists=<missing>",
                  "bag:city=<missing>", "num:age=<missing>"}
    assert dense[names.index("num:age")] == 0.0 and not ids.any()


def test_saved_preprocessor_round_trips_and_old_format_refused(tmp_path):
    pre = hand_preprocessor()
    pre.save(str(tmp_path / "p.json"))
    assert Preprocessor.load(str(tmp_path / "p.json")) == pre
    (tmp_path / "old.json").write_text('{"version": "v0", "categorical": {}, "numeric": {}}')
    with pytest.raises(UserError, match="format 1.*run 'features'"):
        Preprocessor.load(str(tmp_path / "old.json"))
    with pytest.raises(UserError, match="run 'features' first"):
        Preprocessor.load(str(tmp_path / "absent.json"))


def test_one_profile_with_odd_values_is_read_or_refused_clearly():
    pre = hand_preprocessor()
    base = {"id": "p", "gender": "female", "sexual_orientation": None, "created_at": None}
    # A single interest as text, an unreadable age and date: read as one value, missing, missing.
    dense, _ = pre.transform_one({**base, "interests": "hiking", "age": "abc", "created_at": "yesterday"}, as_of=AS_OF)
    names = pre.feature_names()
    on = {names[i] for i in np.flatnonzero(dense)}
    assert on == {"cat:gender=female", "multi:interests=hiking", "bag:artists=<missing>", "bag:city=<missing>",
                  "num:age=<missing>"}
    with pytest.raises(UserError, match="attributes must be a mapping"):
        pre.transform_one({**base, "age": 30, "attributes": "speaks english"}, as_of=AS_OF)
    with pytest.raises(UserError, match="a profile must be a mapping"):
        pre.transform_one(["p", "female"], as_of=AS_OF)
    with pytest.raises(UserError, match="no column 'age'"):
        pre.transform_one(base, as_of=AS_OF)


def test_one_profile_dates_music_and_as_of_of_the_wrong_kind():
    pre = hand_preprocessor()
    base = {"id": "p", "gender": "female", "sexual_orientation": None, "age": 10 ** 400}
    for created in (np.datetime64("2026-11-30T12:00"), 1764590400, b"2026-01-01", ["2026-01-01"]):
        dense, _ = pre.transform_one({**base, "created_at": created}, as_of=AS_OF)
        names = pre.feature_names()
        assert dense[names.index("num:age=<missing>")] == 1.0  # an absurd number is missing, not a crash
        assert dense[names.index("flag:new_user")] == (1.0 if isinstance(created, np.datetime64) else 0.0)
    for music in (["jazz"], {"genre": "jazz"}, [None], "jazz"):
        with pytest.raises(UserError, match="music must be a list of rows"):
            pre.transform_one({**base, "created_at": None}, music=music, as_of=AS_OF)
    import pandas as pd
    _, ids = pre.transform_one({**base, "created_at": None}, music=pd.DataFrame([{"genre": "x", "artist_name": "a1"}]),
                               as_of=AS_OF)
    assert ids[0] == 1
    with pytest.raises(UserError, match="as_of must be a date and time"):
        pre.transform_one({**base, "created_at": None}, as_of="notadate")


def test_unknown_attributes_of_one_profile_warned(caplog):
    pre = hand_preprocessor()
    with caplog.at_level(logging.WARNING):
        pre.transform_one({"id": "p", "gender": None, "sexual_orientation": None, "age": None, "created_at": None,
                           "attributes": {"favourite_colour": "blue", "diet": "vegan", "ethnicity": "x"}}, as_of=AS_OF)
    assert "favourite_colour" in caplog.text and "diet" not in caplog.text and "ethnicity" not in caplog.text


@pytest.mark.parametrize("content, message", [
    ("", "not a preprocessor"), ("[1, 2]", "not a preprocessor"), ('{"profiles": 3}', "not a preprocessor"),
    ('{"version": "v", "fitted_at": "x", "one_hot": {}, "bags": {"city": {}}, "format": 2}', "damaged preprocessor"),
])
def test_wrong_files_are_not_preprocessors(tmp_path, content, message):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(UserError, match=message):
        Preprocessor.load(str(tmp_path / "p.json"))
    with pytest.raises(UserError, match="not a preprocessor file"):
        Preprocessor.load(str(tmp_path))
