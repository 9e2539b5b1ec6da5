"""`pipeline` end to end on a small synthetic config: real Delta, Horovod (2 processes), FAISS."""
import json
import os
import subprocess
import sys

import pytest

from lib import lake
from lib.cli import PIPELINE, main
from lib.schema import fits
from tests.conftest import ROOT

K = 20
SMALL = ["source.num_profiles=900", "train.epochs=6", "train.batch_size=64", f"match.k={K}",
         "synthesize.candidate_draws=30"]


@pytest.fixture(scope="module")
def small_run(spark, tmp_path_factory):
    lake_dir = str(tmp_path_factory.mktemp("pipeline") / "lake")
    argv = ["--conf", f"{ROOT}/conf/local.yaml", "--set", f"lake.path={lake_dir}"]
    for s in SMALL:
        argv += ["--set", s]
    assert main(list(PIPELINE), job="pipeline", argv=argv) == 0
    return lake_dir


def table(spark, lake_dir, name):
    return [r.asDict() for r in lake.read_table(spark, lake_dir, name).collect()]


def test_every_stage_recorded_under_one_run(spark, small_run):
    runs = table(spark, small_run, "runs")
    assert sorted(r["stage"] for r in runs) == sorted(PIPELINE)
    assert len({r["run_id"] for r in runs}) == 1
    mv = {r["model_version"] for r in runs if r["stage"] in ("train", "embed", "index", "match", "evaluate")}
    assert len(mv) == 1 and os.path.isdir(os.path.join(small_run, "models", mv.pop()))


def test_matches_obey_every_hard_filter(spark, small_run):
    profiles = {p["id"]: p for p in table(spark, small_run, "profiles")}
    inter = table(spark, small_run, "interactions")
    matches = table(spark, small_run, "matches")
    active = {i for i, p in profiles.items() if p["setup_complete"] and p["deleted_at"] is None and not p["banned"]}
    assert len(active) < len(profiles)  # the generator makes some inactive accounts
    acted = {(r["user_id"], r["profile_id"]) for r in inter if r["split"] == "train"}
    by_user = {}
    for m in matches:
        u, p = profiles[m["user_id"]], profiles[m["profile_id"]]
        assert m["user_id"] != m["profile_id"]
        assert m["user_id"] in active and m["profile_id"] in active
        assert fits(u["gender"], u["looking_for"], p["gender"], p["looking_for"])
        assert (m["user_id"], m["profile_id"]) not in acted
        by_user.setdefault(m["user_id"], []).append(m)
    # Every active user gets min(K, the candidates they could get), ranked 1..n by score.
    for uid in active:
        u = profiles[uid]
        can = [pid for pid in active if pid != uid and (uid, pid) not in acted
               and fits(u["gender"], u["looking_for"], profiles[pid]["gender"], profiles[pid]["looking_for"])]
        got = sorted(by_user.get(uid, []), key=lambda m: m["rank"])
        assert len(got) == min(K, len(can)), uid
        assert [m["rank"] for m in got] == list(range(1, len(got) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(got, got[1:]))
    assert {m["model_version"] for m in matches} == {r["model_version"] for r in table(spark, small_run, "runs")
                                                     if r["stage"] == "match"}
    assert not any(c in matches[0] for c in ("name", "bio", "avatar_url"))


def test_model_beats_both_baselines(spark, small_run):
    run_id = table(spark, small_run, "runs")[0]["run_id"]
    with open(os.path.join(small_run, "reports", run_id, "metrics.json")) as f:
        report = json.load(f)
    assert report["run_id"] == run_id and report["k"] == K
    m = report["metrics"]
    assert set(m) == {"two_tower", "random", "popularity"}
    for model in m.values():
        assert set(model) == {"precision", "recall", "map", "ndcg"}
        assert all(0.0 <= v <= 1.0 for v in model.values())
    assert m["two_tower"]["recall"] > 1.5 * max(m["random"]["recall"], m["popularity"]["recall"])
    rows = table(spark, small_run, "metrics")
    assert len(rows) == 12 and {r["run_id"] for r in rows} == {run_id}


def test_tables_readable_without_spark(small_run):
    # Downstream services read with delta-rs; in a subprocess (see STACK.md on pyarrow 14).
    code = ("import sys, json; from deltalake import DeltaTable; "
            "df = DeltaTable(sys.argv[1]).to_pandas(); print(json.dumps([len(df), sorted(df.columns)]))")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(small_run, "matches")],
                         capture_output=True, text=True, check=True).stdout
    n, cols = json.loads(out.strip().splitlines()[-1])
    assert n > 0
    assert cols == sorted(["user_id", "rank", "profile_id", "score", "model_version", "run_id", "generated_at"])


def test_audit_catches_broken_rows(spark, small_run, tmp_path):
    from pyspark.sql import functions as F

    from lib.audit import audit_matches
    from tests.conftest import make_cfg
    cfg = make_cfg(small_run, f"match.k={K}")
    assert {k: v for k, v in audit_matches(spark, cfg).items() if k not in ("rows", "users")} == {
        "self": 0, "gender_fit": 0, "inactive": 0, "already_acted_on": 0, "blocked": 0, "users_short_of_matches": 0}
    profiles = lake.read_table(spark, small_run, "profiles")
    man = profiles.where("gender = 'male' and array_contains(looking_for, 'female') and setup_complete "
                         "and deleted_at is null and not banned").first()["id"]
    other_man = profiles.where(f"gender = 'male' and sexual_orientation = 'straight' and id != '{man}'").first()["id"]
    m = lake.read_table(spark, small_run, "matches").limit(1)
    bad = (m.withColumn("user_id", F.lit(man)).withColumn("profile_id", F.lit(man))
           .unionByName(m.withColumn("user_id", F.lit(man)).withColumn("profile_id", F.lit(other_man))))
    copy = str(tmp_path / "lake")
    import shutil
    shutil.copytree(small_run, copy)
    lake.write_table(bad, copy, "matches", mode="append")
    v = audit_matches(spark, make_cfg(copy, f"match.k={K}"))
    assert v["self"] == 1 and v["gender_fit"] == 2  # a straight man is no fit for himself either


def test_index_shards_follow_the_filter_groups(spark, small_run):
    import faiss
    import pandas as pd
    runs = {r["stage"]: r for r in table(spark, small_run, "runs")}
    index_dir = json.loads(runs["index"]["info"])["index_dir"]
    manifest = json.load(open(os.path.join(index_dir, "manifest.json")))
    profiles = {p["id"]: p for p in table(spark, small_run, "profiles")}
    seen = []
    assert len(manifest["shards"]) >= 2
    for s in manifest["shards"]:
        ids = pd.read_parquet(os.path.join(index_dir, s["ids_file"]))["profile_id"].tolist()
        index = faiss.read_index(os.path.join(index_dir, s["file"]))
        assert index.ntotal == len(ids) == s["count"] and index.d == manifest["dim"]
        for pid in ids:  # every profile of a shard has the shard's gender and seeks its genders
            assert profiles[pid]["gender"] == s["gender"] and sorted(profiles[pid]["looking_for"]) == s["seeks"]
        seen += ids
    active = {i for i, p in profiles.items() if p["setup_complete"] and p["deleted_at"] is None and not p["banned"]}
    assert sorted(seen) == sorted(active)  # each active profile in exactly one shard
