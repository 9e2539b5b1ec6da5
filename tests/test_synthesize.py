from lib.synthesize import sample_candidates, split_holdout

DDL = "id string, gender string, looking_for array<string>"
PEOPLE = [
    ("m1", "male", ["female"]), ("m2", "male", ["female"]), ("m3", "male", ["male"]),
    ("f1", "female", ["male"]), ("f2", "female", ["male"]), ("f3", "female", ["female"]),
    ("f4", "female", ["male", "female", "non-binary"]), ("n1", "non-binary", ["male", "female", "non-binary"]),
]
SEEKS = {p: (g, set(lf)) for p, g, lf in PEOPLE}


def test_candidates_fit_both_ways_and_never_self(spark):
    active = spark.createDataFrame(PEOPLE, DDL)
    pairs = {(r["user_id"], r["profile_id"]) for r in sample_candidates(active, 30, 1, True).collect()}
    assert pairs
    for u, p in pairs:
        assert u != p
        assert SEEKS[p][0] in SEEKS[u][1] and SEEKS[u][0] in SEEKS[p][1], (u, p)
    # With 30 draws over pools this small, every fitting pair is found (worked out by hand).
    fitting = {(u, p) for u in SEEKS for p in SEEKS
               if u != p and SEEKS[p][0] in SEEKS[u][1] and SEEKS[u][0] in SEEKS[p][1]}
    assert pairs == fitting
    assert ("m3", "f1") not in pairs and ("f3", "f4") in pairs and ("n1", "f4") in pairs


def test_without_gender_filter_anyone_but_oneself(spark):
    active = spark.createDataFrame([(p, None, None) for p, _, _ in PEOPLE], DDL)
    pairs = {(r["user_id"], r["profile_id"]) for r in sample_candidates(active, 40, 1, False).collect()}
    assert pairs == {(u, p) for u in SEEKS for p in SEEKS if u != p}


def test_candidate_count_grows_linearly_with_draws_not_users(spark):
    n = 4000
    active = spark.createDataFrame([(f"u{i}", "male" if i % 2 else "female", ["female"] if i % 2 else ["male"])
                                    for i in range(n)], DDL)
    per_user = sample_candidates(active, 10, 3, True).groupBy("user_id").count()
    stats = per_user.agg({"count": "max"}).first()[0], per_user.agg({"count": "avg"}).first()[0]
    # About draws x SLOT_SIZE (=20) candidates per user, whatever the number of users.
    assert 12 <= stats[1] <= 22 and stats[0] <= 45


def test_holdout_takes_a_fifth_of_each_users_positives(spark):
    rows = [("u1", f"p{i}", 1) for i in range(10)] + [("u1", f"n{i}", 0) for i in range(10)] + \
           [("u2", f"p{i}", 1) for i in range(3)] + [("u3", "p0", 1)]
    df = spark.createDataFrame(rows, "user_id string, profile_id string, label int")
    out = split_holdout(df, 0.2, 5).collect()
    held = {}
    for r in out:
        held.setdefault(r["user_id"], []).append(r) if r["split"] == "heldout" else None
    assert len(held["u1"]) == 2 and all(r["label"] == 1 for r in held["u1"])  # round(10 * 0.2)
    assert len(held["u2"]) == 1  # round(0.6)
    assert "u3" not in held  # round(0.2) = 0: a single positive stays in training
    again = split_holdout(df.repartition(3), 0.2, 5).collect()
    assert sorted(map(str, out)) == sorted(map(str, again))
