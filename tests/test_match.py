"""The top-K search of ``match`` on real FAISS shards written and read as ``index`` and
``match`` do, against brute force written here from the rules themselves."""
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lib.errors import UserError
from lib.match import shards_for
from lib.shard_store import ivf_nlist, load_shard, write_shard
from lib import topk as topk_module
from lib.topk import Users, shard_set, topk
from tests.match_rules import allowed

INDEX_CFG = SimpleNamespace(type="auto", flat_max=100000, ivf_nlist=0, nprobe=8, hnsw_m=16, hnsw_ef_search=64)
N, D = 600, 8


@pytest.fixture
def world():
    """N people, each both a user and a profile, with ages, settings and coordinates."""
    rng = np.random.default_rng(1)

    def unit(m):
        v = rng.normal(size=(m, D)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    age = rng.integers(18, 70, size=N).astype(float)
    has_range = rng.random(N) < 0.3
    has_limit = rng.random(N) < 0.3
    df = pd.DataFrame({
        "profile_id": [f"p{i:04d}" for i in range(N)],
        "popularity": rng.integers(0, 50, size=N),
        "age": age,
        "age_min": np.where(has_range, age - rng.integers(1, 8, size=N), np.nan),
        "age_max": np.where(has_range, age + rng.integers(1, 12, size=N), np.nan),
        "max_distance_km": np.where(has_limit, rng.uniform(20, 400, size=N), np.nan),
        # Two cities ~550 km apart, people spread ~20 km around them; a few without coordinates.
        "latitude": np.where(rng.random(N) < 0.5, 37.77, 34.05) + rng.normal(0, 0.1, N),
        "longitude": -120.0 + rng.normal(0, 0.1, N),
    })
    df.loc[rng.random(N) < 0.05, ["latitude", "longitude"]] = np.nan
    # Two choosy people: their own age only, within 15 km.
    for i in (0, 7):
        df.loc[i, ["age_min", "age_max", "max_distance_km", "latitude"]] = [age[i], age[i], 15.0, 37.77]
    df["embedding"] = list(unit(N))
    df["user_embedding"] = list(unit(N))
    return df


def write_shards(tmp_path, df, splits, kind="flat"):
    """Shards of ``df`` as ``index`` writes them (random split), loaded back as ``match`` does."""
    cfg = SimpleNamespace(**{**INDEX_CFG.__dict__, "type": kind})
    os.makedirs(tmp_path, exist_ok=True)
    part_of = np.random.default_rng(splits).integers(0, splits, size=len(df))
    shards, offsets, offset = [], [], 0
    for s in range(splits):
        entry = write_shard(str(tmp_path), s, df[part_of == s], kind, cfg)
        shards.append(load_shard(str(tmp_path), entry))
        offsets.append(offset)
        offset += entry["count"]
    return shard_set(shards, offsets)


def users_of(df, rows, sset, excluded_ids):
    """The Users for people ``rows`` of ``df``: their own index positions and exclusions."""
    pos = {pid: g for pid, g in zip(sset.ids, sset.gpos)}
    sub = df.iloc[rows]
    return Users(ids=sub["profile_id"].to_numpy(object), queries=np.stack(sub["user_embedding"].values),
                 gpos=np.array([pos[p] for p in sub["profile_id"]], dtype=np.int64),
                 excluded=[np.array([pos[p] for p in e], dtype=np.int64) for e in excluded_ids],
                 attrs={a: sub[a].to_numpy(float) for a in ("age", "age_min", "age_max", "max_distance_km",
                                                            "latitude", "longitude")},
                 profile_vectors=np.stack(sub["embedding"].values))


def brute_force(df, r, excluded, k, settings=True):
    u = df.iloc[r]
    q = u["user_embedding"]
    scored = []
    for j in range(len(df)):
        p = df.iloc[j]
        if j == r or p["profile_id"] in excluded or (settings and not allowed(u, p)):
            continue
        scored.append((-float(np.dot(q, p["embedding"])), p["profile_id"]))
    return [pid for _, pid in sorted(scored)[:k]]


@pytest.mark.parametrize("max_fetch,cells", [(4096, 1 << 23), (16, 1000)], ids=["index", "exhaustive"])
def test_sharded_topk_equals_one_flat_index_with_every_filter(world, tmp_path, monkeypatch, max_fetch, cells):
    # "exhaustive": the deeper rounds go past MAX_FETCH at once, so the exact scoring of
    # every slot (in chunks of a few rows) takes each user's best in rounds of its own.
    monkeypatch.setattr(topk_module, "MAX_FETCH", max_fetch)
    monkeypatch.setattr(topk_module, "EXHAUSTIVE_CELLS", cells)
    df = world
    rows = np.arange(0, N, 7)
    rng = np.random.default_rng(5)
    excluded = [set(df["profile_id"].iloc[rng.choice(N, 15, replace=False)]) for _ in rows]
    expected = [brute_force(df, r, excluded[i], 10) for i, r in enumerate(rows)]
    assert min(len(e) for e in expected) < 10 == max(len(e) for e in expected)  # some users are short
    for splits in (1, 3, 7):
        sset = write_shards(tmp_path / f"s{splits}", df, splits)
        got_rows, ranks, slots, scores = topk(users_of(df, rows, sset, excluded), sset, 10)
        for i in range(len(rows)):
            mine = got_rows == i
            assert list(ranks[mine]) == list(range(1, mine.sum() + 1))
            assert list(sset.ids[slots[mine]]) == expected[i], (splits, i)
            assert np.all(np.diff(scores[mine]) <= 0)


def test_the_next_round_is_as_deep_as_the_pass_rate_says():
    fetch, want = 101, 100
    passed = np.array([50, 10, 0, 100, 100, 90])
    dry = np.array([False, False, False, False, True, False])
    got = topk_module._next_fetch(fetch, passed, want, dry)
    # Rounded up to 2^e or 1.5 x 2^e. 50 of 101 passed: 1.5 x 101 x 100 / 50 = 303 -> 384;
    # 10 passed: 1515 -> 1536; none passed, or a dry index: the exhaustive search (past
    # MAX_FETCH); enough passed but not above the frontier: twice (202 -> 256); 90 passed:
    # 168.3, but at least twice: 202 -> 256.
    assert list(got[[0, 1, 3, 5]]) == [384, 1536, 256, 256]
    assert got[2] > topk_module.MAX_FETCH and got[4] > topk_module.MAX_FETCH


def test_distance_limits_hold_to_the_centimetre(tmp_path):
    # Along the equator the great-circle distance is exactly R x the longitude difference in
    # radians, so the expected answers need no distance formula at all.
    r_km = topk_module.EARTH_RADIUS_KM
    lons = [1.0 - 1e-7, 1.0 + 1e-7, 0.05 / r_km * 180 / np.pi * 0.98, 0.05 / r_km * 180 / np.pi * 1.02, 0.0, np.nan]
    df = pd.DataFrame({"profile_id": [f"p{i}" for i in range(len(lons))], "popularity": 0, "age": 30.0,
                       "age_min": np.nan, "age_max": np.nan, "max_distance_km": np.nan,
                       "latitude": [0.0] * 5 + [np.nan], "longitude": lons})
    df["embedding"] = df["user_embedding"] = list(np.eye(len(lons), D, dtype=np.float32))
    sset = write_shards(tmp_path, df, 1)
    slots = np.broadcast_to(np.arange(len(lons)), (2, len(lons)))
    users = Users(ids=np.array(["u1", "u2"], object), queries=np.zeros((2, D), np.float32),
                  gpos=np.array([-1, -1]), excluded=[np.zeros(0, np.int64)] * 2,
                  attrs={"age": np.array([30.0, 30.0]), "age_min": np.full(2, np.nan), "age_max": np.full(2, np.nan),
                         "max_distance_km": np.array([r_km * np.pi / 180, 0.05]),  # 1 degree; 50 m
                         "latitude": np.zeros(2), "longitude": np.zeros(2)})
    by_id = {pid: j for j, pid in enumerate(sset.ids)}
    order = [by_id[f"p{i}"] for i in range(len(lons))]
    ok = topk_module.passes(users, np.arange(2), slots[:, order], sset, settings=True)
    assert ok[0].tolist() == [True, False, True, True, True, False]
    assert ok[1].tolist() == [False, False, True, False, True, False]


def test_without_settings_filters_only_oneself_and_exclusions_go(world, tmp_path):
    df = world
    sset = write_shards(tmp_path, df, 3)
    rows = np.arange(5)
    excluded = [set(df["profile_id"].iloc[[10, 11, 12]])] * 5
    got_rows, _, slots, _ = topk(users_of(df, rows, sset, excluded), sset, 20, settings=False)
    for i, r in enumerate(rows):
        assert list(sset.ids[slots[got_rows == i]]) == brute_force(df, r, excluded[i], 20, settings=False)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_shards_are_close_to_exact_and_nobody_is_left_short(world, tmp_path, kind):
    df = pd.concat([world] * 4, ignore_index=True)  # 2,400 rows: enough for IVF lists
    df["profile_id"] = [f"p{i:05d}" for i in range(len(df))]
    rng = np.random.default_rng(3)
    v = rng.normal(size=(len(df), D)).astype(np.float32)
    df["embedding"] = list(v / np.linalg.norm(v, axis=1, keepdims=True))
    ivf = write_shards(tmp_path / kind, df, 2, kind=kind)
    flat = write_shards(tmp_path / "flat", df, 2, kind="flat")
    assert ivf.shards[0].entry["type"] == kind
    if kind == "ivf":
        assert ivf.shards[0].entry["params"]["nlist"] == ivf_nlist(ivf.shards[0].count)
    rows = np.arange(0, len(df), 11)
    none = [set()] * len(rows)
    r_ivf, _, s_ivf, _ = topk(users_of(df, rows, ivf, none), ivf, 20)
    r_flat, _, s_flat, _ = topk(users_of(df, rows, flat, none), flat, 20)
    recall = np.mean([len(set(ivf.ids[s_ivf[r_ivf == i]]) & set(flat.ids[s_flat[r_flat == i]])) /
                      max(1, (r_flat == i).sum()) for i in range(len(rows))])
    assert recall > 0.8
    # Whoever the filters leave few candidates still gets all of them (the exhaustive round).
    counts_ivf = np.bincount(r_ivf, minlength=len(rows))
    counts_flat = np.bincount(r_flat, minlength=len(rows))
    assert np.array_equal(counts_ivf, counts_flat)
    assert (counts_flat < 20).any()


def test_reciprocal_rerank_by_the_harmonic_mean_of_both_directions(world, tmp_path):
    df = world
    sset = write_shards(tmp_path, df, 2)
    rows = np.arange(4)
    users = users_of(df, rows, sset, [set()] * 4)
    got_rows, _, slots, scores = topk(users, sset, 5, settings=False, reciprocal=True, pool=50)
    for i, r in enumerate(rows):
        pool = brute_force(df, r, set(), 50, settings=False)
        me = df.iloc[r]
        by_id = df.set_index("profile_id")
        hm = {}
        for pid in pool:
            a = (1 + float(np.dot(me["user_embedding"], by_id.loc[pid, "embedding"]))) / 2
            b = (1 + float(np.dot(by_id.loc[pid, "user_embedding"], me["embedding"]))) / 2
            hm[pid] = 2 * a * b / (a + b)
        want = sorted(pool, key=lambda p: -hm[p])[:5]
        assert list(sset.ids[slots[got_rows == i]]) == want
        assert scores[got_rows == i] == pytest.approx([hm[p] for p in want], abs=1e-5)


def test_popularity_and_random_baselines_respect_the_filters(world, tmp_path):
    df = world
    sset = write_shards(tmp_path, df, 3)
    rows = np.arange(3)
    top_id = df.sort_values(["popularity", "profile_id"], ascending=[False, True])["profile_id"].tolist()
    excluded = [set(), {top_id[0]}, set()]
    users = users_of(df, rows, sset, excluded)
    got_rows, _, slots, _ = topk(users, sset, 5, scorer="popularity", settings=False)
    for i, r in enumerate(rows):
        want = [p for p in top_id if p != df["profile_id"].iloc[r] and p not in excluded[i]][:5]
        assert list(sset.ids[slots[got_rows == i]]) == want
    a = topk(users, sset, 10, scorer="random", seed=3)
    b = topk(users, sset, 10, scorer="random", seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    by_id = df.set_index("profile_id")
    for i, r in enumerate(rows):
        for pid in sset.ids[a[2][a[0] == i]]:
            assert allowed(df.iloc[r], by_id.loc[pid]) and pid != df["profile_id"].iloc[r]


def test_random_baseline_is_uniform_over_shards_of_unequal_size(world, tmp_path):
    df = world
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small = load_shard(str(tmp_path / "a"), write_shard(str(tmp_path / "a"), 0, df.iloc[:60], "flat", INDEX_CFG))
    big = load_shard(str(tmp_path / "b"), write_shard(str(tmp_path / "b"), 1, df.iloc[60:], "flat", INDEX_CFG))
    sset = shard_set([small, big], [0, 60])
    n = 600
    users = Users(ids=np.array([f"u{i}" for i in range(n)], object), queries=np.zeros((n, D), np.float32),
                  gpos=np.full(n, -1), excluded=[np.zeros(0, np.int64)] * n,
                  attrs={a: np.full(n, np.nan) for a in ("age", "age_min", "age_max", "max_distance_km",
                                                        "latitude", "longitude")})
    _, _, slots, _ = topk(users, sset, 10, scorer="random", seed=1)
    assert np.mean(slots < 60) == pytest.approx(60 / N, abs=0.02)


def test_a_changed_shard_file_is_refused(world, tmp_path):
    entry = write_shard(str(tmp_path), 0, world, "flat", INDEX_CFG)
    assert set(entry["sha256"]) == {"file", "vectors_file", "user_vectors_file", "meta_file"}
    with open(tmp_path / entry["meta_file"], "ab") as f:
        f.write(b"x")
    with pytest.raises(UserError, match="differs from its manifest"):
        load_shard(str(tmp_path), entry)


def test_ivf_lists_follow_the_shard_size():
    assert ivf_nlist(200_000) == 2048  # 4 x sqrt(200,000) = 1,789 -> 2^11
    assert ivf_nlist(10_000) == 256  # 400 -> 2^9 = 512, but 39 x 512 > 10,000
    assert ivf_nlist(10) == 1


def test_shard_choice_follows_mutual_fit():
    entries = [{"gender": "male", "seeks": ["female"]}, {"gender": "male", "seeks": ["male"]},
               {"gender": "female", "seeks": ["male"]}, {"gender": "female", "seeks": ["female"]},
               {"gender": "female", "seeks": ["female", "male", "non-binary"]}]
    straight_woman = shards_for(entries, "female", ["male"], True)
    assert straight_woman == [entries[0]]
    lesbian = shards_for(entries, "female", ["female"], True)
    assert lesbian == [entries[3], entries[4]]
    assert shards_for(entries, "male", ["female"], True) == [entries[2], entries[4]]
    assert shards_for(entries, "male", None, True) == []
    assert shards_for(entries, None, None, False) == entries
