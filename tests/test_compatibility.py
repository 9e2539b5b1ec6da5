import random

import pytest

from lib.compatibility import DEFAULT_WEIGHTS, PAIR_FIELDS, compatibility, compatibility_col

A = {"group_id": "bookworm", "interests": ["reading", "chess", "coffee"], "genres": ["jazz", "classical"],
     "age": 30, "relationship_goal": "long-term", "education_level": "masters", "drinking_habits": "socially",
     "smoking_habits": "never", "attributes": {"religion": "atheism", "diet": "vegan", "pets": "has cats"}}
B = {"group_id": "bookworm", "interests": ["reading", "coffee", "hiking"], "genres": ["jazz"],
     "age": 36, "relationship_goal": "casual", "education_level": "masters", "drinking_habits": "socially",
     "smoking_habits": "regularly", "attributes": {"religion": "atheism", "diet": "anything", "sign": "leo"}}


def test_hand_worked_pair():
    # group 1.0 + interests 1.0*2/4 + genres 0.5*1/2 - age 0.5*0.6 + goal 0 + education 0.2
    # + drinking 0.15 + smoking 0 + attributes 0.6 * 1/2 (religion equal, diet not; sign/pets not shared)
    expected = 1.0 + 0.5 + 0.25 - 0.3 + 0.0 + 0.2 + 0.15 + 0.0 + 0.3
    assert compatibility(A, B) == pytest.approx(expected)
    assert compatibility(B, A) == pytest.approx(expected)


def test_missing_fields_count_as_no_match():
    empty = {f: None for f in PAIR_FIELDS}
    assert compatibility(empty, empty) == 0.0
    # Large age gaps are capped at 20 years.
    assert compatibility({"age": 20}, {"age": 80}) == pytest.approx(-1.0)


def test_spark_twin_equals_python(spark):
    rng = random.Random(3)
    vocab = ["a", "b", "c", "d", "e"]

    def person():
        return {"group_id": rng.choice(["x", "y", None]), "interests": rng.sample(vocab, rng.randint(0, 4)),
                "genres": rng.choice([None, rng.sample(vocab, 2)]), "age": rng.choice([None, rng.randint(18, 70)]),
                "relationship_goal": rng.choice(["lt", "c", None]), "education_level": rng.choice(["m", "b"]),
                "drinking_habits": rng.choice(["s", "n"]), "smoking_habits": rng.choice(["n", None]),
                "attributes": rng.choice([None, {k: rng.choice("pq") for k in rng.sample(vocab, 3)}])}
    pairs = [(person(), person()) for _ in range(200)]
    ddl = ("group_id string, interests array<string>, genres array<string>, age int, relationship_goal string, "
           "education_level string, drinking_habits string, smoking_habits string, attributes map<string,string>")
    cols = [c.strip().split(" ")[0] for c in ddl.split(", ")]
    schema = ", ".join([f"u_{c}" for c in ddl.split(", ")] + [f"p_{c}" for c in ddl.split(", ")])
    rows = [tuple(u[c] for c in cols) + tuple(p[c] for c in cols) for u, p in pairs]
    got = [r[0] for r in spark.createDataFrame(rows, schema).select(compatibility_col()).collect()]
    for (u, p), g in zip(pairs, got):
        assert g == pytest.approx(compatibility(u, p), abs=1e-9)


def test_weights_come_from_the_archetype_file(tmp_path):
    from lib.compatibility import weights
    from lib.errors import UserError
    from lib.sources.synthetic import load_archetypes
    from tests.conftest import ROOT
    import os
    spec = load_archetypes(os.path.join(ROOT, "conf", "archetypes.yaml"))
    assert weights(spec) == DEFAULT_WEIGHTS
    w = weights({"compatibility": {"group": 3, "age": 0}})
    # Only the group counts here besides interests: worked out by hand.
    u = {"group_id": "g", "age": 20, "interests": ["a"]}
    p = {"group_id": "g", "age": 60, "interests": ["a", "b"]}
    assert compatibility(u, p, w) == pytest.approx(3 + 1.0 * 0.5)
    assert compatibility(u, p) == pytest.approx(1 + 0.5 - 0.5 * 2)
    with pytest.raises(UserError, match="unknown compatibility weight"):
        weights({"compatibility": {"grup": 1}})
    with pytest.raises(UserError, match="must be a number"):
        weights({"compatibility": {"age": "x"}})


def test_numpy_twin_equals_python_to_the_last_bit():
    import numpy as np

    from lib.compatibility_batch import compatibility_pairs, encode
    from lib.compatibility_map import plain_pair_fields
    rng = random.Random(5)
    vocab = ["a", "b", "c", "d", "e", "f"]

    def person():
        return plain_pair_fields({
            "group_id": rng.choice(["x", "y", None]), "interests": rng.sample(vocab, rng.randint(0, 5)),
            "genres": rng.choice([None, [], rng.sample(vocab, rng.randint(1, 6))]),
            "age": rng.choice([None, rng.randint(18, 90)]), "relationship_goal": rng.choice(["lt", "c", None]),
            "education_level": rng.choice(["m", "b", None]), "drinking_habits": rng.choice(["s", "n"]),
            "smoking_habits": rng.choice(["n", None]),
            "attributes": rng.choice([None, {}, {k: rng.choice(["p", "q", None]) for k in rng.sample(vocab, 4)}])})
    users, profiles = [person() for _ in range(40)], [person() for _ in range(60)]
    w = {k: rng.choice([-0.7, 0.0, 0.3, 1.3]) for k in ("group", "interests", "genres", "age", "goal", "education",
                                                        "drinking", "smoking", "attributes")}
    codes = {}
    u, p = encode(users, codes), encode(profiles, codes)
    ui, pj = np.repeat(np.arange(40), 60), np.tile(np.arange(60), 40)
    for weights in (w, DEFAULT_WEIGHTS):
        got = compatibility_pairs(u, ui, p, pj, weights)
        expected = [compatibility(users[i], profiles[j], weights) for i, j in zip(ui, pj)]
        assert got.tolist() == expected  # the same floats, not just close ones
