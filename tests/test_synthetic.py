import pytest

from lib.errors import UserError
from lib.sources.synthetic import generate_profile, load_archetypes, synthetic_profiles
from tests.conftest import ROOT

SPEC = f"{ROOT}/conf/archetypes.yaml"


def test_profiles_are_reproducible_and_plausible():
    spec = load_archetypes(SPEC)
    a = [generate_profile(i, 42, spec) for i in range(300)]
    b = [generate_profile(i, 42, spec) for i in range(300)]
    assert a == b
    assert [generate_profile(i, 43, spec) for i in range(5)] != a[:5]
    assert len({p["id"] for p in a}) == 300
    for p in a:
        assert 18 <= p["age"] <= 80
        assert p["group_id"] in spec["archetypes"]
        assert not (p["sexual_orientation"] == "lesbian" and p["gender"] != "female")
        group = spec["archetypes"][p["group_id"]]
        # Most interests come from the profile's own archetype (at most one from another).
        assert sum(i not in group["interests"] for i in p["interests"]) <= 1
        assert all(g in group["genres"] for g, _ in p["music"])
    assert len({p["group_id"] for p in a}) == len(spec["archetypes"])


def test_same_rows_whatever_the_partitioning(spark):
    spec = load_archetypes(SPEC)
    cols = ["id", "age", "gender", "interests", "group_id", "music"]
    one = synthetic_profiles(spark, 200, 5, spec).select(*cols).collect()
    many = synthetic_profiles(spark, 200, 5, spec).repartition(7).select(*cols).collect()
    assert sorted(map(str, one)) == sorted(map(str, many))
    by_id = {r["id"]: r for r in one}
    expected = generate_profile(17, 5, spec)
    assert by_id[expected["id"]]["age"] == expected["age"]
    assert by_id[expected["id"]]["interests"] == expected["interests"]


def test_archetype_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_archetypes(str(tmp_path / "none.yaml"))
    p = tmp_path / "a.yaml"
    p.write_text("defaults: {cities: [{name: X, lat: 0, lon: 0}]}\narchetypes:\n  g: {age: {mean: 30, sd: 1}}\n")
    with pytest.raises(UserError, match="has no 'interests'"):
        load_archetypes(str(p))
