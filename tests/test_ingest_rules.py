"""Named rules for music preferences and interactions, worked out row by row."""
import datetime as dt

from lib.ingest import check_interactions, check_music, check_profiles

KNOWN = ["a", "b", "c"]


def known_df(spark):
    return spark.createDataFrame([(i,) for i in KNOWN], "id string")


def by_id(df):
    return {r["id"]: (r["_rule"], r["_action"]) for r in df.collect()}


def test_music_rules(spark):
    rows = [("m1", "a", "rock", "X", 1), ("m2", "zzz", "rock", "X", 2), ("m3", "b", None, None, 3),
            (None, "a", "pop", "Y", 4), ("m1", "a", "jazz", "Z", 5), ("m6", None, "pop", "Y", 6)]
    df = spark.createDataFrame(rows, "id string, user_id string, genre string, artist_name string, _pos long")
    got = check_music(df, known_df(spark)).collect()
    rules = sorted((r["id"] or "", r["_pos"], r["_rule"]) for r in got)
    assert rules == [("", 4, "missing_id"), ("m1", 1, None), ("m1", 5, "duplicate_id"), ("m2", 2, "orphan_user"),
                     ("m3", 3, "empty_preference"), ("m6", 6, "missing_user")]


def test_interaction_rules(spark):
    t = dt.datetime(2026, 1, 1)
    rows = [("i1", "a", "b", "like", 1), ("i2", "a", "a", "like", 2), ("i3", "a", "nobody", "pass", 3),
            ("i4", "ghost", "b", "match", 4), ("i5", "a", "c", "superlike", 5), ("i6", "b", "c", "block", 6),
            ("i1", "b", "a", "like", 7), ("i8", "c", None, "like", 8)]
    df = spark.createDataFrame([(*r[:4], t, r[4]) for r in rows],
                               "id string, user_id string, profile_id string, event string, created_at timestamp, "
                               "_pos long")
    got = sorted((r["id"], r["_pos"], r["_rule"]) for r in check_interactions(df, known_df(spark)).collect())
    assert got == [("i1", 1, None), ("i1", 7, "duplicate_id"), ("i2", 2, "self_action"), ("i3", 3, "orphan_profile"),
                   ("i4", 4, "orphan_user"), ("i5", 5, "unknown_event"), ("i6", 6, None),
                   ("i8", 8, "missing_profile")]


def test_deleted_rows_delete_whatever_else_they_say(spark):
    t = dt.datetime(2026, 1, 1)
    df = spark.createDataFrame([("i1", "a", "a", "like", 1, t), ("i2", "a", "b", "like", 2, None)],
                               "id string, user_id string, profile_id string, event string, _pos long, "
                               "deleted_at timestamp")
    assert by_id(check_interactions(df, known_df(spark))) == {"i1": (None, "delete"), "i2": (None, "upsert")}


def test_profile_erase_and_keep_actions(spark):
    t = dt.datetime(2026, 1, 1)
    schema = ("id string, age int, _age_raw string, gender string, sexual_orientation string, banned boolean, "
              "deleted_at timestamp, _corrupt_record string, _pos long")
    df = spark.createDataFrame([
        ("p1", 30, "30", "male", "straight", False, None, None, 1),
        ("p2", 15, "15", "male", "straight", False, t, None, 2),     # deleted: erased even though under 18
        ("p3", 40, "40", "female", "gay", True, None, None, 3),      # banned
        ("p4", 12, "12", "female", "gay", False, None, None, 4),     # quarantined: the lake's version kept
    ], schema)
    assert by_id(check_profiles(df, True, True)) == {
        "p1": (None, "upsert"), "p2": (None, "erase"), "p3": (None, "erase"), "p4": ("age_under_18", "keep")}


def test_sources_without_age_do_not_need_one(spark):
    df = spark.createDataFrame([("p1", None, None, None, None, None, 1)],
                               "id string, age int, _age_raw string, gender string, sexual_orientation string, "
                               "_corrupt_record string, _pos long")
    assert by_id(check_profiles(df, False, False)) == {"p1": (None, "upsert")}
    assert by_id(check_profiles(df, False, True)) == {"p1": ("age_missing", "keep")}


def test_match_settings_rules(spark):
    schema = ("id string, age int, _age_raw string, gender string, sexual_orientation string, age_min int, "
              "age_max int, max_distance_km double, _corrupt_record string, _pos long")
    rows = [("ok", 30, 25, 40, 50.0), ("none", 30, None, None, None), ("only_min", 30, 25, None, None),
            ("inverted", 30, 40, 25, None), ("min_17", 30, 17, 40, None), ("max_101", 30, 20, 101, None),
            ("zero_km", 30, None, None, 0.0), ("nan_km", 30, None, None, float("nan")),
            ("no_limit", 30, None, None, float("inf"))]
    df = spark.createDataFrame([(i, a, str(a), "male", "straight", lo, hi, d, None, n)
                                for n, (i, a, lo, hi, d) in enumerate(rows)], schema)
    assert by_id(check_profiles(df, True, True)) == {
        "ok": (None, "upsert"), "none": (None, "upsert"), "only_min": (None, "upsert"),
        "inverted": ("age_range_invalid", "keep"), "min_17": ("age_range_invalid", "keep"),
        "max_101": ("age_range_invalid", "keep"), "zero_km": ("max_distance_invalid", "keep"),
        "nan_km": ("max_distance_invalid", "keep"), "no_limit": (None, "upsert")}
