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


def test_oracle_is_the_exact_top_k_of_the_eligible_profiles(spark, lake_dir):
    from lib import lake
    from lib.compatibility import compatibility
    from lib.compatibility_map import plain_pair_fields
    from lib.evaluate import oracle_recs
    from lib.schema import INTERACTIONS_DDL, conform, fits
    from tests.conftest import make_cfg
    from tests.test_synthesize import is_active, write_people
    people = write_people(spark, lake_dir, 120, seed=3)
    active = sorted(i for i, p in people.items() if is_active(p))
    inactive = sorted(set(people) - set(active))
    assert inactive  # the generator makes a few
    users = active[:25]
    # Interactions: each user acted on a few people in training, one pair of them blocked, a
    # held-out like (stays eligible), and a like of an inactive account (never eligible anyway).
    rows = []
    for n, u in enumerate(users):
        rows += [(u, active[(n * 7 + j) % len(active)], "like", 1, "train") for j in range(1, 4)]
        rows.append((u, active[(n * 11 + 5) % len(active)], "like", 1, "heldout"))
        rows.append((u, inactive[n % len(inactive)], "like", 1, "train"))
    rows.append((active[60], users[0], "block", None, "train"))  # a block against users[0]
    rows.append((users[1], active[61], "block", None, "train"))
    rows = [(f"i{n}", u, p, e, lab, "synthetic", s) for n, (u, p, e, lab, s) in enumerate(rows) if u != p]
    inter = spark.createDataFrame(rows, "id string, user_id string, profile_id string, event string, label int, "
                                        "source string, split string")
    lake.write_table(conform(inter, INTERACTIONS_DDL), lake_dir, "interactions")
    k = 6
    cfg = make_cfg(lake_dir)
    search, recs = oracle_recs(spark, cfg, "r1", spark.createDataFrame([(u,) for u in users], "user_id string"),
                               k, True)
    try:
        got = recs.collect()
    finally:
        search.close()

    # Brute force: fits both ways, active, not oneself, not acted on in training, no block
    # either way, both sides' match settings; the best k by compatibility(), ties by id.
    from tests.match_rules import allowed
    train = {(u, p) for _, u, p, _, _, _, s in rows if s == "train"}
    blocked = {(u, p) for _, u, p, e, _, _, _ in rows if e == "block"}
    blocked |= {(p, u) for u, p in blocked}
    fields = {i: plain_pair_fields({**people[i], "attributes": None}) for i in people}
    by_user = {}
    for r in got:
        by_user.setdefault(r["user_id"], []).append((r["rank"], r["profile_id"], r["score"]))
    assert set(by_user) <= set(users)
    for u in users:
        pu = people[u]
        eligible = [p for p in active if p != u and (u, p) not in train and (u, p) not in blocked
                    and fits(pu["gender"], pu["looking_for"], people[p]["gender"], people[p]["looking_for"])
                    and allowed(pu, people[p])]
        expected = sorted(((compatibility(fields[u], fields[p]), p) for p in eligible), key=lambda t: (-t[0], t[1]))[:k]
        mine = sorted(by_user.get(u, []))
        assert [(p, s) for _, p, s in mine] == [(p, s) for s, p in expected], u
        assert [r for r, _, _ in mine] == list(range(1, len(expected) + 1))
    assert any(len(by_user.get(u, [])) == k for u in users)
    choosy = [u for u in users if people[u]["age_min"] is not None or people[u]["max_distance_km"] is not None]
    assert choosy  # the settings were in play
