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


def test_label_pairs_takes_the_best_as_positives_and_random_others_as_negatives(spark):
    from lib.compatibility import PAIR_FIELDS, compatibility
    from lib.config import SynthesizeConfig
    from lib.synthesize import label_pairs
    people = {f"p{i}": {"group_id": "g" if i % 2 else "h", "interests": ["a", "b"][: i % 3], "genres": None,
                        "age": 20 + i, "relationship_goal": None, "education_level": None, "drinking_habits": None,
                        "smoking_habits": None, "attributes": None} for i in range(12)}
    attrs = spark.createDataFrame([{"id": k, **v} for k, v in people.items()],
                                  "id string, group_id string, interests array<string>, genres array<string>, "
                                  "age int, relationship_goal string, education_level string, "
                                  "drinking_habits string, smoking_habits string, attributes map<string,string>")
    cands = [(u, p) for u in ("p0", "p1") for p in people if p != u]
    pairs = spark.createDataFrame(cands + cands[:3], "user_id string, profile_id string")  # repeats collapse
    syn = SynthesizeConfig(positives_per_user=3, negatives_per_user=4, noise=0.0, holdout_fraction=0.34)
    out = label_pairs(pairs, attrs.select("id", *PAIR_FIELDS), syn, 9).collect()
    for u in ("p0", "p1"):
        mine = [r for r in out if r["user_id"] == u]
        ranked = sorted((p for p in people if p != u), key=lambda p: (-compatibility(people[u], people[p]), p))
        assert {r["profile_id"] for r in mine if r["label"] == 1} == set(ranked[:3])
        negs = [r["profile_id"] for r in mine if r["label"] == 0]
        assert len(negs) == 4 and set(negs) <= set(ranked[3:])
        assert sum(r["split"] == "heldout" for r in mine) == 1  # round(3 * 0.34)
        assert all(r["label"] == 1 for r in mine if r["split"] == "heldout")
