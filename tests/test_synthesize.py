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


def test_label_pairs_keeps_the_positives_and_draws_negatives_from_the_rest(spark):
    from lib.config import SynthesizeConfig
    from lib.synthesize import label_pairs
    positives = [("u1", f"p{i}") for i in range(5)] + [("u2", "p0")]
    drawn = [("u1", f"p{i}") for i in range(3, 20)] + [("u1", "n0")] * 3 + [("u2", "p0"), ("u2", "n1"), ("u3", "n2")]
    pos_df = spark.createDataFrame(positives, "user_id string, profile_id string")
    drawn_df = spark.createDataFrame(drawn, "user_id string, profile_id string")
    syn = SynthesizeConfig(negatives_per_user=6, holdout_fraction=0.4)
    out = label_pairs(pos_df, drawn_df, syn, 9).collect()
    got = {(r["user_id"], r["profile_id"]): (r["label"], r["split"]) for r in out}
    assert len(got) == len(out)  # no pair twice
    for u, p in positives:
        assert got[(u, p)][0] == 1
    # round(5 * 0.4) = 2 of u1's positives held out, round(0.4) = 0 of u2's single one.
    assert sum(got[("u1", f"p{i}")][1] == "heldout" for i in range(5)) == 2 and got[("u2", "p0")][1] == "train"
    negs = {u: {p for (uu, p), (label, _) in got.items() if uu == u and label == 0} for u in ("u1", "u2", "u3")}
    # u1: 6 of its 16 drawn pairs that are not positives (p5..p19, n0); u2: n1 only; u3: n2.
    assert len(negs["u1"]) == 6 and negs["u1"] <= {f"p{i}" for i in range(5, 20)} | {"n0"}
    assert negs["u2"] == {"n1"} and negs["u3"] == {"n2"}
    assert all(split == "train" for label, split in got.values() if label == 0)
    again = label_pairs(pos_df.repartition(3), drawn_df.repartition(2), syn, 9).collect()
    assert sorted(map(str, out)) == sorted(map(str, again))
    other = {(r["user_id"], r["profile_id"]) for r in label_pairs(pos_df, drawn_df, syn, 10).collect()}
    assert other != set(got)  # another seed, other negatives


# --- synthesize on a lake of generated profiles, against a brute force in plain Python ---

PEOPLE_DDL = ("id string, setup_complete boolean, age int, gender string, sexual_orientation string, "
              "looking_for array<string>, interests array<string>, relationship_goal string, "
              "education_level string, drinking_habits string, smoking_habits string, group_id string, "
              "banned boolean, deleted_at timestamp, age_min int, age_max int, max_distance_km double, "
              "latitude double, longitude double")


def write_people(spark, lake_dir, n, seed=42, files=1):
    """``n`` generated profiles written straight into the lake's profiles and
    music_preferences (no ingest); returns {id: profile} with looking_for and genres added."""
    from lib import lake
    from lib.schema import MUSIC_DDL, PROFILES_DDL, conform, derive_looking_for
    from lib.sources.synthetic import generate_profile, load_archetypes
    from tests.conftest import ROOT
    spec = load_archetypes(f"{ROOT}/conf/archetypes.yaml")
    people = {}
    for i in range(n):
        p = generate_profile(i, seed, spec)
        p["looking_for"] = sorted(derive_looking_for(p["gender"], p["sexual_orientation"])[0])
        p["genres"] = sorted({g for g, _ in p["music"]})
        people[p["id"]] = p
    cols = [c.split(" ")[0] for c in PEOPLE_DDL.split(", ")]
    prof = spark.createDataFrame([tuple(p[c] for c in cols) for p in people.values()], PEOPLE_DDL)
    lake.write_table(conform(prof, PROFILES_DDL).repartition(files), lake_dir, "profiles")
    music = [(f"{p['id']}:{j}", p["id"], g, a) for p in people.values() for j, (g, a) in enumerate(p["music"])]
    mdf = spark.createDataFrame(music, "id string, user_id string, genre string, artist_name string")
    lake.write_table(conform(mdf, MUSIC_DDL).repartition(files), lake_dir, "music_preferences")
    return people


def is_active(p) -> bool:
    return bool(p["setup_complete"]) and not p["banned"] and p["deleted_at"] is None


def global_rankings(people, noise=0.0, seed=0):
    """{user: [(score, profile id)] of everyone active who fits both ways, best first (ties by
    id)}: the score is compatibility(), plus noise x the pair's draw when noise is given."""
    from lib.compatibility import compatibility
    from lib.compatibility_map import plain_pair_fields
    from lib.compatibility_search import gaussian_noise, id_keys
    from lib.schema import fits
    active = sorted(i for i, p in people.items() if is_active(p))
    fields = {i: plain_pair_fields({**people[i], "attributes": None}) for i in active}
    out = {}
    for u in active:
        pu = people[u]
        cands = [p for p in active if p != u and fits(pu["gender"], pu["looking_for"], people[p]["gender"],
                                                       people[p]["looking_for"])]
        scores = [compatibility(fields[u], fields[p]) for p in cands]
        if noise:
            draws = gaussian_noise(seed, [u] * len(cands), id_keys(cands))
            scores = [s + noise * float(d) for s, d in zip(scores, draws)]
        out[u] = sorted(zip(scores, cands), key=lambda t: (-t[0], t[1]))
    return out


def synthetic_rows(spark, lake_dir):
    from lib import lake
    return [r.asDict() for r in lake.read_table(spark, lake_dir, "interactions").collect()]


def test_positives_are_the_top_of_each_users_global_ranking(spark, lake_dir):
    from lib import synthesize
    from tests.conftest import make_cfg
    people = write_people(spark, lake_dir, 600)
    # Without noise the positives are each user's 10 best of everyone who fits, by the exact score.
    synthesize.run(spark, make_cfg(lake_dir, "synthesize.noise=0"), "r1")
    rows = synthetic_rows(spark, lake_dir)
    exact = global_rankings(people)
    pos = {}
    for r in rows:
        assert is_active(people[r["user_id"]]) and is_active(people[r["profile_id"]])
        if r["label"] == 1:
            pos.setdefault(r["user_id"], set()).add(r["profile_id"])
    users = [u for u, ranked in exact.items() if len(ranked) >= 10]
    same = sum(pos.get(u, set()) == {p for _, p in exact[u][:10]} for u in users)
    # The search only approximates the score before it rescores exactly, so a best profile
    # could be missed now and then; at this size nearly never (the retrieval tests measure it).
    assert same >= 0.97 * len(users), (same, len(users))

    # With the default noise: the 10 best by the noisy score of the global ranking.
    cfg = make_cfg(lake_dir)
    assert cfg.synthesize.noise > 0
    synthesize.run(spark, cfg, "r2")
    rows = synthetic_rows(spark, lake_dir)
    noisy = global_rankings(people, cfg.synthesize.noise, cfg.synthesize.seed)
    pos = {}
    for r in rows:
        if r["label"] == 1:
            pos.setdefault(r["user_id"], set()).add(r["profile_id"])
    same = sum(pos.get(u, set()) == {p for _, p in noisy[u][:10]} for u in users)
    # Only the retrieve (200) best by the feature map are rescored: a noisy best from further
    # down is out of reach. With pools of a few hundred people that is rare.
    assert same >= 0.9 * len(users), (same, len(users))
    # Drawn from near the top of the exact ranking, not from all over it: in the pools
    # here (~200 people) a random pick lands in the top 50 a quarter of the time.
    rank = {u: {p: i for i, (_, p) in enumerate(exact[u])} for u in users}
    near = [rank[u][p] < 50 for u in users for p in pos.get(u, ())]
    assert sum(near) >= 0.8 * len(near), sum(near) / len(near)
    # Negatives: 10 per user, never a positive, never oneself, all fitting both ways.
    from lib.schema import fits
    neg = {}
    for r in rows:
        u, p = people[r["user_id"]], people[r["profile_id"]]
        assert r["user_id"] != r["profile_id"] and fits(u["gender"], u["looking_for"], p["gender"], p["looking_for"])
        if r["label"] == 0:
            neg.setdefault(r["user_id"], set()).add(r["profile_id"])
            assert r["split"] == "train"
    assert all(not (neg[u] & pos.get(u, set())) for u in neg)
    assert sum(len(v) == 10 for v in neg.values()) >= 0.95 * len(neg)


def test_same_rows_whatever_the_partitioning(spark, lake_dir):
    from lib import synthesize
    from tests.conftest import make_cfg
    write_people(spark, lake_dir, 300, files=1)
    synthesize.run(spark, make_cfg(lake_dir), "r1")
    first = sorted((r["user_id"], r["profile_id"], r["label"], r["split"]) for r in synthetic_rows(spark, lake_dir))
    write_people(spark, lake_dir, 300, files=5)
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        synthesize.run(spark, make_cfg(lake_dir), "r2")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    again = sorted((r["user_id"], r["profile_id"], r["label"], r["split"]) for r in synthetic_rows(spark, lake_dir))
    assert first == again and len(first) > 1000
