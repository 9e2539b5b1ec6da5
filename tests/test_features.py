"""Fitting in Spark checked by hand; the Spark bulk transform equals the one-profile transform."""
import datetime as dt
import json
import logging
import math

import numpy as np
import pytest

from lib import lake
from lib.cli import run_stages
from lib.config import FeaturesConfig
from lib.errors import UserError
from lib.features.fit import feature_inputs, fit_preprocessor
from lib.features.job import report_path
from lib.features.preprocessor import Preprocessor
from lib.schema import PROFILES_DDL, conform
from tests.conftest import OKCUPID_SAMPLE, make_cfg

AS_OF = dt.datetime(2026, 12, 1)
PROFILES = [
    ("a", "male", "straight", 30, 180.0, dt.datetime(2026, 11, 21), "Oakland", "chef", ["hiking", "chess"],
     {"speaks": "english (fluently), spanish (poorly)", "favourite": "x"}),
    ("b", "female", "straight", 40, 160.0, dt.datetime(2025, 1, 1), "Oakland", "nurse", ["hiking"],
     {"speaks": "english"}),
    ("c", "female", "gay", 20, None, None, "Berkeley", None, None, None),
]
DDL = ("id string, gender string, sexual_orientation string, age int, height double, created_at timestamp, "
       "location string, job_title string, interests array<string>, attributes map<string,string>")
MUSIC = [("a", "rock", "r1"), ("a", "jazz", "j1"), ("b", "rock", "r1"), ("b", "rock", "r2")]


@pytest.fixture
def fitted(spark, caplog):
    profiles = conform(spark.createDataFrame(PROFILES, DDL), PROFILES_DDL)
    music = spark.createDataFrame(MUSIC, "user_id string, genre string, artist_name string")
    fc = FeaturesConfig(max_categories=1, max_multi_hot=2, min_count=1, max_bag_vocab=1, hash_buckets=3,
                        max_bag_ids=2)
    with caplog.at_level(logging.WARNING):
        pre, report = fit_preprocessor(feature_inputs(profiles, music), "v1", AS_OF, fc)
    return pre, report, caplog.text


def test_fit_by_hand(fitted):
    pre, _, _ = fitted
    # Top-1 one-hot vocabularies: the most frequent value, ties broken by value.
    assert pre.one_hot["gender"] == ["female"] and pre.one_hot["sexual_orientation"] == ["straight"]
    assert pre.one_hot["dominant_genre"] == ["jazz"]  # a: jazz/rock tie -> jazz; b: rock -> tie again
    # At most 2 values: multi-hot; the full vocabulary, most frequent first.
    assert pre.multi_hot == {"interests": ["hiking", "chess"], "genres": ["rock", "jazz"],
                             "languages": ["english", "spanish"], "pets": []}
    # Embedding bags keep the top 1 value, the rest share 3 hashed buckets.
    assert pre.bags == {"city": {"vocab": ["oakland"], "buckets": 3, "length": 1},
                        "job_title": {"vocab": ["chef"], "buckets": 3, "length": 1},
                        "artists": {"vocab": ["r1"], "buckets": 3, "length": 2}}
    assert pre.numeric["age"] == pytest.approx([30.0, math.sqrt(200 / 3)])
    assert pre.numeric["height"] == pytest.approx([170.0, 10.0])
    assert pre.numeric["genre_count"] == pytest.approx([1.5, 0.5])
    assert pre.numeric["genre_entropy"] == pytest.approx([math.log(2) / 2, math.log(2) / 2])
    t = [math.log1p(10.0), math.log1p(699.0)]  # a: 10 days, b: 2025-01-01 -> 2026-12-01
    assert pre.numeric["tenure_days"] == pytest.approx([np.mean(t), np.std(t)])
    assert pre.numeric["income"] == [0.0, 1.0]  # no values: identity scaling


def test_feature_report(fitted):
    _, report, warned = fitted
    f = report["features"]
    assert report["profiles"] == 3
    assert f["gender"]["coverage"] == 1.0 and f["gender"]["vocab_size"] == 1 and f["gender"]["distinct_values"] == 2
    assert f["height"]["missing_rate"] == pytest.approx(1 / 3)
    assert f["languages"]["coverage"] == pytest.approx(2 / 3) and f["languages"]["encoding"] == "multi_hot"
    assert f["city"] == {"encoding": "embedding_bag", "coverage": 1.0, "missing_rate": 0.0, "distinct_values": 2,
                         "vocab_size": 1, "hash_buckets": 3, "id_slots": 1}
    assert f["pets"]["coverage"] == 0.0
    assert f["new_user"]["share"] == pytest.approx(1 / 3)
    assert report["unknown_attributes"] == {"favourite": 1}
    assert "favourite (1 profiles)" in warned


def test_multi_valued_field_becomes_embedding_bag_past_the_limit(spark):
    profiles = conform(spark.createDataFrame(PROFILES, DDL), PROFILES_DDL)
    music = spark.createDataFrame(MUSIC, "user_id string, genre string, artist_name string")
    fc = FeaturesConfig(max_multi_hot=1, min_count=1, max_bag_ids=4)
    pre, _ = fit_preprocessor(feature_inputs(profiles, music), "v1", AS_OF, fc)
    assert "interests" in pre.bags and pre.bags["interests"]["vocab"] == ["hiking", "chess"]
    assert "interests" not in pre.multi_hot
    dense, ids = pre.transform_one({"id": "n", "gender": None, "sexual_orientation": None, "age": None,
                                    "created_at": None, "interests": ["chess", "hiking", "yoga"]}, as_of=AS_OF)
    start = next(b["start"] for b in pre.bag_layout() if b["field"] == "interests")
    import zlib
    yoga = 2 + 1 + zlib.crc32(b"interests\x1fyoga") % fc.hash_buckets
    assert list(ids[start:start + 4]) == [2, 1, yoga, 0]  # sorted values: chess, hiking, yoga


def test_required_column_missing_is_named(spark):
    profiles = conform(spark.createDataFrame(PROFILES, DDL), PROFILES_DDL).drop("sexual_orientation")
    music = spark.createDataFrame(MUSIC, "user_id string, genre string, artist_name string")
    with pytest.raises(UserError, match="no column 'sexual_orientation'"):
        feature_inputs(profiles, music)


def test_spark_bulk_equals_single_profile_on_real_and_synthetic_rows(spark, lake_dir):
    """At least 1,000 profiles: the OkCupid sample (real, messy) and synthetic ones, through
    the ingest and the features stage, against ``transform_one`` on each profile as a dict."""
    overrides = ("features.min_count=3", "features.max_bag_vocab=5", "features.hash_buckets=11")
    # The sample keeps the file's bad rows (minors, unreadable ages): they go to quarantine.
    run_stages(spark, make_cfg(lake_dir, "source.kind=okcupid", f"source.path={OKCUPID_SAMPLE}",
                               "source.max_quarantine_fraction=0.3", *overrides), ["ingest"], "r1")
    cfg = make_cfg(lake_dir, "source.num_profiles=700", *overrides)
    run_stages(spark, cfg, ["ingest"], "r2")
    info = run_stages(spark, cfg, ["features"], "f1")["features"]
    pre = Preprocessor.load(info["preprocessor"])
    as_of = dt.datetime.fromisoformat(pre.fitted_at)

    profiles = lake.read_table(spark, lake_dir, "profiles").collect()
    music: dict = {}
    for r in lake.read_table(spark, lake_dir, "music_preferences").collect():
        music.setdefault(r["user_id"], []).append({"genre": r["genre"], "artist_name": r["artist_name"]})
    bulk = {r["id"]: r for r in lake.read_table(spark, lake_dir, "features").where("run_id = 'f1'").collect()}
    assert len(profiles) == len(bulk) >= 1000
    assert sum(1 for p in profiles if p["source"] == "okcupid") == 405

    hashed = 0
    for p in profiles:
        dense, ids = pre.transform_one(p.asDict(), music=music.get(p["id"], []), as_of=as_of)
        row = bulk[p["id"]]
        np.testing.assert_allclose(np.array(row["dense"], dtype=np.float32), dense, atol=1e-6, rtol=0,
                                   err_msg=p["id"])
        assert list(row["ids"]) == ids.tolist(), p["id"]
        assert (row["latitude"], row["longitude"]) == (p["latitude"], p["longitude"])
        hashed += sum(1 for b in pre.bag_layout() for i in ids[b["start"]:b["start"] + b["length"]]
                      if i > len(pre.bags[b["field"]]["vocab"]))
    assert hashed > 100  # values outside the vocabulary went through the hashed buckets

    report = json.loads(open(report_path(lake_dir, "f1")).read())
    f = report["features"]
    # Coverage: the share of profiles whose raw value is there (OkCupid's phrases were parsed).
    for feature, raw in (("religion", "religion"), ("languages", "speaks"), ("has_kids", "offspring")):
        with_raw = sum(1 for p in profiles if (p["attributes"] or {}).get(raw))
        expect = with_raw / len(profiles)
        if feature == "has_kids":  # "doesn't want kids" says nothing about having them
            assert 0 < f[feature]["coverage"] < expect
        else:
            assert f[feature]["coverage"] == pytest.approx(expect, abs=1e-6), feature
    assert f["interests"]["coverage"] == pytest.approx(sum(1 for p in profiles if p["interests"]) / len(profiles),
                                                       abs=1e-6)
    assert "ethnicity" not in json.dumps(report) and "name" not in f


def test_features_table_of_an_older_layout_is_replaced(spark, lake_dir):
    cfg = make_cfg(lake_dir, "source.num_profiles=200")
    run_stages(spark, cfg, ["ingest"], "r1")
    old = spark.createDataFrame([("x", [1.0], "old")], "id string, features array<float>, run_id string")
    lake.write_table(old, lake_dir, "features", partition_by=["run_id"])
    run_stages(spark, cfg, ["features"], "f2")
    table = lake.read_table(spark, lake_dir, "features")
    assert "dense" in table.columns and table.where("run_id = 'old'").count() == 0
    assert table.count() == lake.read_table(spark, lake_dir, "profiles").count()


def test_no_profiles_to_fit_is_refused(spark, lake_dir):
    lake.write_table(spark.createDataFrame([], PROFILES_DDL), lake_dir, "profiles")
    with pytest.raises(UserError, match="no profiles to fit"):
        run_stages(spark, make_cfg(lake_dir), ["features"], "f0")
    assert not lake.table_exists(spark, lake_dir, "features")
