import math

import pytest

from lib.evaluate import metrics_df, ranking_metrics


def test_ranking_metrics_by_hand():
    # Hits at ranks 1 and 3 of 4 recommendations; 3 relevant items.
    m = ranking_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, 4)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    # More relevant items than K: AP and the ideal DCG are capped at K.
    m = ranking_metrics(["a", "b"], {"a", "b", "c"}, 2)
    assert m["map"] == pytest.approx(1.0) and m["ndcg"] == pytest.approx(1.0)
    assert ranking_metrics([], {"a"}, 3) == {"precision": 0.0, "recall": 0.0, "map": 0.0, "ndcg": 0.0}


def test_spark_metrics_equal_the_mean_of_per_user_metrics(spark):
    recs = {"u1": ["a", "x", "b", "y"], "u2": ["q", "r", "s", "t"], "u3": ["c"]}
    rel = {"u1": {"a", "b", "c"}, "u2": {"t"}, "u3": {"c", "d"}, "u4": {"z"}}  # u4 got nothing
    k = 3
    rec_df = spark.createDataFrame([(u, i + 1, p) for u, ps in recs.items() for i, p in enumerate(ps)],
                                   "user_id string, rank int, profile_id string")
    rel_df = spark.createDataFrame([(u, p) for u, ps in rel.items() for p in ps], "user_id string, profile_id string")
    row = metrics_df(rec_df, rel_df, k)
    per_user = [ranking_metrics(recs.get(u, []), r, k) for u, r in rel.items()]
    assert row["users"] == 4
    for m in ("precision", "recall", "map", "ndcg"):
        assert row[m] == pytest.approx(sum(p[m] for p in per_user) / 4)
