"""A deleted or banned account leaves every table, then table history (VACUUM)."""
import glob
import os

import pandas as pd
import pytest
import yaml

from lib import ingest, lake, synthesize
from lib.errors import UserError
from lib.schema import MATCHES_DDL
from lib.sources.synthetic import generate_profile, load_archetypes
from tests.conftest import ROOT, make_cfg

N = 300


def archetypes(tmp_path, banned, deleted):
    spec = yaml.safe_load(open(os.path.join(ROOT, "conf", "archetypes.yaml")))
    spec["defaults"].update(banned=banned, deleted=deleted)
    path = tmp_path / f"arch-{banned}-{deleted}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def ids_in_data_files(table_dir, cols):
    """Every id value in every parquet file under the table (current and old versions)."""
    out = set()
    for f in glob.glob(os.path.join(table_dir, "**", "*.parquet"), recursive=True):
        df = pd.read_parquet(f, columns=[c for c in cols])
        for c in cols:
            out |= set(df[c].dropna())
    return out


def test_banned_and_deleted_accounts_leave_every_table_and_history(spark, lake_dir, tmp_path):
    base = [f"source.num_profiles={N}", "lake.vacuum_retention_hours=0"]
    first = make_cfg(lake_dir, *base, f"source.archetypes_file={archetypes(tmp_path, 0.0, 0.0)}")
    ingest.run(spark, first, "r1")
    synthesize.run(spark, first, "r2")
    everyone = [r["id"] for r in lake.read_table(spark, lake_dir, "profiles").collect()]
    assert len(everyone) == N
    # A published matches table that pairs everyone with the next person.
    rows = [(u, 1, everyone[(i + 1) % N], 0.5, "m1", "r2", None) for i, u in enumerate(everyone)]
    lake.write_table(spark.createDataFrame(rows, MATCHES_DDL), lake_dir, "matches")

    # The same generator run again: a tenth of the accounts now banned, 5% deleted.
    arch = archetypes(tmp_path, 0.1, 0.05)
    spec = load_archetypes(arch)
    expected = set()
    for i in range(N):
        p = generate_profile(i, 42, spec)
        if p["banned"] or p["deleted_at"] is not None:
            expected.add(p["id"])
    assert 20 < len(expected) < 80
    info = ingest.run(spark, make_cfg(lake_dir, *base, f"source.archetypes_file={arch}"), "r3")
    assert info["erased_accounts"] == len(expected)

    def current(table, cols):
        got = set()
        for r in lake.read_table(spark, lake_dir, table).select(*cols).collect():
            got |= set(r)
        return got

    assert current("profiles", ["id"]) == set(everyone) - expected
    assert not current("music_preferences", ["user_id"]) & expected
    assert current("music_preferences", ["user_id"])  # the others' preferences are still there
    assert not current("interactions", ["user_id", "profile_id"]) & expected
    assert not current("matches", ["user_id", "profile_id"]) & expected
    kept = lake.read_table(spark, lake_dir, "matches").count()
    assert kept == sum(1 for i, u in enumerate(everyone) if u not in expected and everyone[(i + 1) % N] not in expected)
    # History: with a retention of 0 hours no data file of any version holds them any more.
    for table, cols in (("profiles", ["id"]), ("music_preferences", ["user_id"]),
                        ("interactions", ["user_id", "profile_id"]), ("matches", ["user_id", "profile_id"])):
        assert not ids_in_data_files(lake.table_path(lake_dir, table), cols) & expected, table


def profiles_version(spark, lake_dir):
    return spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, 'profiles')}`").first()["version"]


def test_full_read_erases_what_the_source_no_longer_has_within_a_limit(spark, lake_dir):
    spec = load_archetypes(os.path.join(ROOT, "conf", "archetypes.yaml"))
    gen = [generate_profile(i, 42, spec) for i in range(200)]
    kept = {p["id"] for p in gen if not p["banned"] and p["deleted_at"] is None}  # flagged ones are never stored
    ingest.run(spark, make_cfg(lake_dir, "source.num_profiles=200", "source.mode=full"), "r1")
    assert {r["id"] for r in lake.read_table(spark, lake_dir, "profiles").collect()} == kept
    version = profiles_version(spark, lake_dir)

    # A full read of only the first 150: a quarter of the lake's profiles would go. Refused.
    with pytest.raises(UserError, match=r"lacks \d+ of the lake's \d+ synthetic profiles"):
        ingest.run(spark, make_cfg(lake_dir, "source.num_profiles=150", "source.mode=full"), "r2")
    assert profiles_version(spark, lake_dir) == version
    # An incremental read (the default) never erases what it did not read.
    ingest.run(spark, make_cfg(lake_dir, "source.num_profiles=150"), "r3")
    assert {r["id"] for r in lake.read_table(spark, lake_dir, "profiles").collect()} == kept
    # With the limit raised the full read erases the 50 the source no longer has.
    info = ingest.run(spark, make_cfg(lake_dir, "source.num_profiles=150", "source.mode=full",
                                      "source.max_erase_fraction=0.5"), "r4")
    first150 = {p["id"] for p in gen[:150]}
    assert {r["id"] for r in lake.read_table(spark, lake_dir, "profiles").collect()} == kept & first150
    # Erased: the 50 absent ones that were in the lake, and the read's own banned or deleted.
    assert info["erased_accounts"] == len(kept - first150) + len(first150 - kept)


def test_match_refuses_an_index_built_before_accounts_were_erased(spark, lake_dir):
    import datetime as dt
    from lib.match import _refuse_if_erased_since
    cfg = make_cfg(lake_dir)
    index_run = {"run_id": "i1", "finished_at": dt.datetime(2026, 1, 1)}
    lake.record_run(spark, lake_dir, "ingest", "g0", "", {"erased_rows": {"profiles": 0}})
    _refuse_if_erased_since(spark, cfg, index_run)  # nothing erased: fine
    lake.record_run(spark, lake_dir, "ingest", "g1", "", {"erased_rows": {"profiles": 2, "matches": 5}})
    with pytest.raises(UserError, match="ingest run g1 erased deleted or banned accounts after the newest index"):
        _refuse_if_erased_since(spark, cfg, index_run)
    _refuse_if_erased_since(spark, cfg, {"run_id": "i2", "finished_at": dt.datetime(2100, 1, 1)})  # a newer index


def test_full_read_of_a_truncated_file_never_empties_a_table(spark, lake_dir, tmp_path):
    import shutil
    from tests.conftest import FIXTURES
    folder = tmp_path / "lastfm"
    shutil.copytree(os.path.join(FIXTURES, "lastfm_sample"), folder)
    cfg = make_cfg(lake_dir, "source.kind=lastfm", f"source.path={folder}", "source.mode=full")
    ingest.run(spark, cfg, "r1")
    friends = lake.read_table(spark, lake_dir, "interactions").count()
    assert friends > 0
    version = spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, 'interactions')}`").first()["version"]
    header = (folder / "user_friends.dat").read_text(encoding="utf-8").splitlines()[0]
    (folder / "user_friends.dat").write_text(header + "\n", encoding="utf-8")  # every friendship gone
    # (On the sample the friends-only profiles go too, so the profiles guard speaks first.)
    with pytest.raises(UserError, match=r"source.mode=full: the read lacks \d+ of the lake's"):
        ingest.run(spark, cfg, "r2")
    assert lake.read_table(spark, lake_dir, "interactions").count() == friends
    assert spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, 'interactions')}`").first()["version"] == version


def test_full_read_guard_for_music_and_interactions(spark, lake_dir):
    from lib.ingest import _check_absent_rows
    from lib.schema import INTERACTIONS_DDL, conform
    rows = [(f"i{i}", "u", f"p{i}", "like", "lastfm") for i in range(10)] + [("s1", "u", "p", "like", "synthetic")]
    df = spark.createDataFrame(rows, "id string, user_id string, profile_id string, event string, source string")
    lake.write_table(conform(df, INTERACTIONS_DDL), lake_dir, "interactions")
    cfg = make_cfg(lake_dir, "source.kind=lastfm", "source.path=x", "source.mode=full")
    read = spark.createDataFrame([(f"i{i}",) for i in range(9)], "id string")  # 1 of 10 absent: 10%, allowed
    _check_absent_rows(spark, cfg, read, "interactions")
    read = spark.createDataFrame([(f"i{i}",) for i in range(8)], "id string")  # 2 of 10 absent (synthetic not counted)
    with pytest.raises(UserError, match=r"lacks 2 of the lake's 10 lastfm interactions rows \(20.0%\)"):
        _check_absent_rows(spark, cfg, read, "interactions")


def test_only_the_newest_indexes_are_kept(tmp_path):
    # Old indexes hold erased accounts' vectors and attributes: each index run keeps the
    # newest index.keep and removes the rest, never a run in progress or a stranger's folder.
    from lib.lake import prune_artifacts
    root = tmp_path / "indexes"
    names = ["20261201T100000Z-aaaaaa", "20261202T100000Z-bbbbbb", "20261203T090000Z-cccccc",
             "20261203T100000Z-dddddd"]
    for n in names + ["20261204T100000Z-eeeeee.tmp", "notes"]:
        (root / n).mkdir(parents=True)
        (root / n / "manifest.json").write_text("{}")
    assert prune_artifacts(str(tmp_path), "indexes", 2) == names[:2]
    assert sorted(p.name for p in root.iterdir()) == sorted(names[2:] + ["20261204T100000Z-eeeeee.tmp", "notes"])
    assert prune_artifacts(str(tmp_path), "indexes", 2) == []
    assert prune_artifacts(str(tmp_path / "nowhere"), "indexes", 2) == []
