import numpy as np
import pytest

from lib.match import Shard, shards_for, topk


def make_shards(x, ids, pop, splits):
    import faiss
    shards = []
    for part in np.array_split(np.arange(len(ids)), splits):
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[part])
        shards.append(Shard(index, np.array(ids, dtype=object)[part], np.array(pop)[part]))
    return shards


@pytest.fixture
def world():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"p{i:03d}" for i in range(300)]
    pop = rng.integers(0, 50, size=300)
    return x, ids, pop


def brute_force(q, x, ids, banned, k):
    scores = x @ q
    order = sorted(range(len(ids)), key=lambda j: -scores[j])
    return [ids[j] for j in order if ids[j] not in banned][:k]


def test_sharded_topk_is_exact_topk_with_exclusions(world):
    x, ids, pop = world
    q = x[:20] + 0.1
    users = ids[:20]  # users are profiles too: never themselves
    excluded = [set(ids[j] for j in np.argsort(-(x @ q[i]))[:5]) for i in range(20)]  # their 5 best acted on
    for splits in (1, 3, 7):
        got = topk(q, users, excluded, make_shards(x, ids, pop, splits), k=10)
        for i, u in enumerate(users):
            mine = [r for r in got if r[0] == u]
            assert [r[1] for r in mine] == list(range(1, 11))
            assert [r[2] for r in mine] == brute_force(q[i], x, ids, excluded[i] | {u}, 10)


def test_popularity_and_random_baselines_respect_exclusions(world):
    x, ids, pop = world
    shards = make_shards(x, ids, pop, 3)
    excluded = [set(), {ids[int(np.argmax(pop))]}]
    got = topk(x[:2], ["u1", "u2"], excluded, shards, k=5, scorer="popularity")
    top = sorted(range(300), key=lambda j: (-pop[j], ids[j]))
    assert [r[2] for r in got if r[0] == "u1"] == [ids[j] for j in top[:5]]
    assert [r[2] for r in got if r[0] == "u2"] == [ids[j] for j in top[1:6]]
    r1 = topk(x[:2], ["u1", "u2"], [set(), set(ids[:290])], shards, k=10, scorer="random", seed=3)
    assert r1 == topk(x[:2], ["u1", "u2"], [set(), set(ids[:290])], shards, k=10, scorer="random", seed=3)
    assert sorted(r[2] for r in r1 if r[0] == "u2") == ids[290:]  # only ten remain
    assert len({r[2] for r in r1 if r[0] == "u1"}) == 10


def test_random_baseline_is_uniform_over_shards_of_unequal_size(world):
    x, ids, pop = world
    shards = make_shards(x, ids, pop, 1)[:1]
    small = Shard(shards[0].index, shards[0].ids[:30], shards[0].popularity[:30])
    big = make_shards(x[30:], ids[30:], pop[30:], 1)[0]
    users = [f"u{i}" for i in range(600)]
    got = topk(np.zeros((600, 8), np.float32), users, [set()] * 600, [small, big], k=10, scorer="random", seed=1)
    from_small = sum(r[2] in set(ids[:30]) for r in got) / len(got)
    assert from_small == pytest.approx(30 / 300, abs=0.02)


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
