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
from tests.match_rules import allowed

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
        assert allowed(u, p)  # age ranges and distances, both ways
        by_user.setdefault(m["user_id"], []).append(m)
    # Every active user gets min(K, the candidates they could get), ranked 1..n by score.
    for uid in active:
        u = profiles[uid]
        can = [pid for pid in active if pid != uid and (uid, pid) not in acted
               and fits(u["gender"], u["looking_for"], profiles[pid]["gender"], profiles[pid]["looking_for"])
               and allowed(u, profiles[pid])]
        got = sorted(by_user.get(uid, []), key=lambda m: m["rank"])
        assert len(got) == min(K, len(can)), uid
        assert [m["rank"] for m in got] == list(range(1, len(got) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(got, got[1:]))
    assert {m["model_version"] for m in matches} == {r["model_version"] for r in table(spark, small_run, "runs")
                                                     if r["stage"] == "match"}
    assert not any(c in matches[0] for c in ("name", "bio", "avatar_url"))
    # The settings took effect: some users set them, and some of those got fewer than K.
    choosy = [uid for uid in active if profiles[uid]["age_min"] is not None or profiles[uid]["max_distance_km"]]
    assert len(choosy) > len(active) / 10
    assert any(len(by_user.get(uid, [])) < K for uid in choosy)


def test_model_beats_both_baselines(spark, small_run):
    run_id = table(spark, small_run, "runs")[0]["run_id"]
    with open(os.path.join(small_run, "reports", run_id, "metrics.json")) as f:
        report = json.load(f)
    assert report["run_id"] == run_id and report["k"] == K
    m = report["metrics"]
    assert set(m) == {"two_tower", "random", "popularity", "oracle"}  # oracle: the interactions are synthetic
    for model in m.values():
        assert set(model) == {"precision", "recall", "map", "ndcg"}
        assert all(0.0 <= v <= 1.0 for v in model.values())
    assert m["two_tower"]["recall"] > 1.5 * max(m["random"]["recall"], m["popularity"]["recall"])
    rows = table(spark, small_run, "metrics")
    assert len(rows) == 16 and {r["run_id"] for r in rows} == {run_id}


def test_tables_readable_without_spark(small_run):
    # Downstream services read with delta-rs; in a subprocess (see STACK.md on pyarrow 14).
    # os._exit after the answer: under load, delta-rs's threads now and then abort the
    # interpreter's teardown ("terminate called without an active exception"), after the read.
    code = ("import os, sys, json; from deltalake import DeltaTable; "
            "df = DeltaTable(sys.argv[1]).to_pandas(); print(json.dumps([len(df), sorted(df.columns)]), flush=True); "
            "os._exit(0)")
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
    clean = audit_matches(spark, cfg)
    assert {k: v for k, v in clean.items() if k not in ("rows", "users", "users_with_fewer_than_k",
                                                         "short_users_checked")} == {
        "self": 0, "gender_fit": 0, "inactive": 0, "already_acted_on": 0, "blocked": 0,
        "age_or_distance_settings": 0, "users_short_of_matches": 0}
    assert 0 < clean["short_users_checked"] == min(1000, clean["users_with_fewer_than_k"])
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
    # Someone outside a choosy user's age range, but otherwise a fit.
    act = profiles.where("setup_complete and deleted_at is null and not banned")
    chooser = act.where("age_min is not null and gender = 'female' and array_contains(looking_for, 'male')").first()
    too_old = act.where(f"gender = 'male' and array_contains(looking_for, 'female') and age > {chooser['age_max']}"
                        ).first()["id"]
    bad = bad.unionByName(m.withColumn("user_id", F.lit(chooser["id"])).withColumn("profile_id", F.lit(too_old)))
    lake.write_table(bad, copy, "matches", mode="append")
    # A user whose matches are dropped is short of them.
    short_user = m.first()["user_id"]
    lake.write_table(lake.read_table(spark, copy, "matches").where(F.col("user_id") != short_user), copy, "matches")
    v = audit_matches(spark, make_cfg(copy, f"match.k={K}", "audit.short_sample=100000"))
    assert v["self"] == 1 and v["gender_fit"] == 2  # a straight man is no fit for himself either
    people = {r["id"]: r.asDict() for r in act.collect()}
    injected = [(man, man), (man, other_man), (chooser["id"], too_old)]
    assert not allowed(people[chooser["id"]], people[too_old])
    assert v["age_or_distance_settings"] == sum(1 for a, b in injected
                                                if a in people and b in people and not allowed(people[a], people[b]))
    assert v["users_short_of_matches"] == 1


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
        ids = pd.read_parquet(os.path.join(index_dir, s["meta_file"]))["profile_id"].tolist()
        index = faiss.read_index(os.path.join(index_dir, s["file"]))
        assert index.ntotal == len(ids) == s["count"] and index.d == manifest["dim"]
        for pid in ids:  # every profile of a shard has the shard's gender and seeks its genders
            assert profiles[pid]["gender"] == s["gender"] and sorted(profiles[pid]["looking_for"]) == s["seeks"]
        seen += ids
    active = {i for i, p in profiles.items() if p["setup_complete"] and p["deleted_at"] is None and not p["banned"]}
    assert sorted(seen) == sorted(active)  # each active profile in exactly one shard


def test_model_version_loads_back_to_the_same_embeddings(spark, small_run):
    """The published model version alone (towers + preprocessor, no Spark) embeds raw profile
    rows exactly as the bulk ``embed`` stage did."""
    import datetime as dt

    import numpy as np

    from lib.train.model_version import load_model_version
    mv = lake.latest_model_version(spark, small_run)
    model = load_model_version(lake.artifact_dir(small_run, "models", mv))
    assert model.version == mv
    as_of = dt.datetime.fromisoformat(model.preprocessor.fitted_at)
    profiles = [r.asDict() for r in lake.read_table(spark, small_run, "profiles").orderBy("id").limit(300).collect()]
    ids = [p["id"] for p in profiles]
    music: dict = {}
    for r in lake.read_table(spark, small_run, "music_preferences").where(lake_in("user_id", ids)).collect():
        music.setdefault(r["user_id"], []).append({"genre": r["genre"], "artist_name": r["artist_name"]})
    for which, key in (("profile", "profile_id"), ("user", "user_id")):
        stored = {r[key]: r["embedding"] for r in lake.read_table(spark, small_run, f"{which}_embeddings")
                  .where(f"model_version = '{mv}'").where(lake_in(key, ids)).collect()}
        got = model.embed(profiles, which, music, as_of=as_of)
        compared = 0
        for p, e in zip(profiles, got):
            if p["id"] in stored:  # inactive profiles are not embedded
                np.testing.assert_allclose(e, np.array(stored[p["id"]], np.float32), atol=1e-5, rtol=0)
                compared += 1
        assert compared >= 200
        assert abs(float(np.linalg.norm(got[0])) - 1.0) < 1e-5  # L2-normalised
    from lib.errors import UserError
    for args, words in (((profiles[0],), "list of profile dicts"), (([profiles[0]], "user", [music]), "music must map"),
                        ((["p1"],), "must be a dict")):
        with pytest.raises(UserError, match=words):
            model.embed(*args)


def lake_in(column, values):
    from pyspark.sql import functions as F
    return F.col(column).isin(list(values))


def test_mlflow_run_of_the_model_version(spark, small_run):
    """MLflow's local store under the lake holds one run for the model version: its settings,
    the loss of every epoch as in model.json, both towers and the preprocessor as artifacts,
    and evaluate's metrics as in its report."""
    from mlflow.tracking import MlflowClient
    mv = lake.latest_model_version(spark, small_run)
    db = os.path.join(small_run, "mlflow", "mlflow.db")
    assert os.path.isfile(db)
    client = MlflowClient(tracking_uri="sqlite:///" + db)
    exp = client.get_experiment_by_name("twotower")
    runs = client.search_runs([exp.experiment_id])
    assert [r.data.tags["model_version"] for r in runs] == [mv]
    run = runs[0]
    assert run.data.params["epochs"] == "6" and run.data.params["loss"] == "softmax"
    with open(os.path.join(small_run, "models", mv, "model.json")) as f:
        meta = json.load(f)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(meta["loss_history"])
    assert len(client.get_metric_history(run.info.run_id, "examples_per_s")) == 6
    files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/preprocessor.json", "model/model.json", "model/user_tower.weights.h5",
            "model/profile_tower.weights.h5"} <= files, files
    eval_run = [r["run_id"] for r in table(spark, small_run, "runs") if r["stage"] == "evaluate"][0]
    with open(os.path.join(small_run, "reports", eval_run, "metrics.json")) as f:
        report = json.load(f)
    assert run.data.metrics[f"recall_at_{K}"] == pytest.approx(report["metrics"]["two_tower"]["recall"])
    assert run.data.metrics[f"popularity_ndcg_at_{K}"] == pytest.approx(report["metrics"]["popularity"]["ndcg"])
    assert not os.path.exists(os.path.join(ROOT, "mlruns"))  # nothing written outside the lake


def test_hard_negatives_are_the_last_model_s_best_non_positives(spark, small_run):
    from lib.train.job import hard_negative_lists
    from tests.conftest import make_cfg
    cfg = make_cfg(small_run, "train.hard_negative_top=5")
    got = {r["user_id"]: list(r["hard"]) for r in hard_negative_lists(spark, cfg).collect()}
    positives = {(r["user_id"], r["profile_id"]) for r in table(spark, small_run, "interactions") if r["label"] == 1}
    expected: dict = {}
    for m in sorted(table(spark, small_run, "matches"), key=lambda m: m["rank"]):
        if m["rank"] <= 5 and (m["user_id"], m["profile_id"]) not in positives:
            expected.setdefault(m["user_id"], []).append(m["profile_id"])
    assert got == expected and len(got) > 100


def test_train_with_hard_negatives(spark, small_run, tmp_path):
    """A second training on the same lake mines one negative per pair from the first model's
    matches; every rank then scores twice the global batch of candidates."""
    import shutil

    from lib.cli import run_stages
    from tests.conftest import make_cfg
    lake_dir = str(tmp_path / "lake")
    shutil.copytree(small_run, lake_dir)
    cfg = make_cfg(lake_dir, *SMALL, "train.epochs=1", "train.hard_negatives=true")
    info = run_stages(spark, cfg, ["train"], lake.new_run_id())["train"]
    assert info["hard_negatives"] is True and info["ranks"] == 2
    with open(os.path.join(info["model_dir"], "model.json")) as f:
        meta = json.load(f)
    assert meta["hard_negatives"] is True and meta["batch_size"] == 64  # the set is large enough for 64
    assert meta["candidates_per_step"] == 2 * 2 * 64
    assert all(0 < x < 20 for x in meta["loss_history"])


def test_reciprocal_match_is_a_new_version_and_the_last_stays_readable(spark, small_run, tmp_path):
    """match.reciprocal=true ranks each user's best by the harmonic mean of both directions,
    worked out here from the embedding tables; the run before stays readable by version."""
    import shutil

    import numpy as np
    from delta.tables import DeltaTable

    from lib.cli import run_stages
    from tests.conftest import make_cfg
    lake_dir = str(tmp_path / "lake")
    shutil.copytree(small_run, lake_dir)
    path = lake.table_path(lake_dir, "matches")
    before = DeltaTable.forPath(spark, path).history(1).first()["version"]
    old = {(r["user_id"], r["rank"]): r["profile_id"] for r in table(spark, lake_dir, "matches")}
    cfg = make_cfg(lake_dir, *SMALL, "match.reciprocal=true", "match.reciprocal_pool=60")
    run_id = lake.new_run_id()
    info = run_stages(spark, cfg, ["match"], run_id)["match"]
    assert info["delta_version"] == before + 1 and info["reciprocal"] is True
    again = spark.read.format("delta").option("versionAsOf", before).load(path).collect()
    assert {(r["user_id"], r["rank"]): r["profile_id"] for r in again} == old
    new = table(spark, lake_dir, "matches")
    assert {r["run_id"] for r in new} == {run_id}
    mv = new[0]["model_version"]
    user_vec = {r["user_id"]: np.array(r["embedding"]) for r in table(spark, lake_dir, "user_embeddings")
                if r["model_version"] == mv}
    prof_vec = {r["profile_id"]: np.array(r["embedding"]) for r in table(spark, lake_dir, "profile_embeddings")
                if r["model_version"] == mv}
    checked = 0
    by_user: dict = {}
    for r in new:
        by_user.setdefault(r["user_id"], []).append(r)
    for uid, rows in list(by_user.items())[:50]:
        rows.sort(key=lambda r: r["rank"])
        for r in rows:
            a = (1 + float(user_vec[uid] @ prof_vec[r["profile_id"]])) / 2
            b = (1 + float(user_vec[r["profile_id"]] @ prof_vec[uid])) / 2
            assert r["score"] == pytest.approx(2 * a * b / (a + b), abs=1e-4)
            checked += 1
        assert all(x["score"] >= y["score"] for x, y in zip(rows, rows[1:]))
    assert checked > 500
    # Not the one-direction order: the reciprocal score reorders some lists.
    assert any(old.get((r["user_id"], r["rank"])) != r["profile_id"] for r in new)


def test_audit_judges_by_the_match_run_s_settings_and_a_changed_index_is_refused(spark, small_run, tmp_path, capsys):
    """A match run with other settings is audited by those settings, not the audit's own
    command line; a shard file or manifest changed after `index` stops `match` with one line."""
    import glob
    import shutil

    from lib.audit import audit_matches
    from tests.conftest import make_cfg
    lake_dir = str(tmp_path / "lake")
    shutil.copytree(small_run, lake_dir)
    argv = ["--conf", f"{ROOT}/conf/local.yaml", "--set", f"lake.path={lake_dir}"]
    assert main(["match"], job="match", argv=argv + ["--set", "match.k=7", "--set", "match.settings_filters=false"]) == 0
    v = audit_matches(spark, make_cfg(lake_dir))  # the defaults: k=50 with the settings on
    # Not judged by the settings the match did not apply, and the line says so.
    assert v["age_or_distance_settings"] == "not-checked(match.settings_filters=false)"
    assert v["users_short_of_matches"] == 0
    assert v["rows"] <= 7 * v["users"]
    before = lake.read_table(spark, lake_dir, "matches").count()
    meta = sorted(glob.glob(os.path.join(lake_dir, "indexes", "*", "shard-*.meta.parquet")))[0]
    with open(meta, "r+b") as f:
        f.seek(40)
        f.write(b"\x00" * 40)
    capsys.readouterr()
    assert main(["match"], job="match", argv=argv) == 2
    err = capsys.readouterr().err
    assert "differs from its manifest" in err and "Traceback" not in err
    manifest = os.path.join(os.path.dirname(meta), "manifest.json")
    edited = json.load(open(manifest))
    edited["shards"][0]["gender"] = "woman" if edited["shards"][0]["gender"] != "woman" else "man"
    with open(manifest, "w") as f:
        json.dump(edited, f)  # still a valid manifest, but users would search the wrong shard
    assert main(["match"], job="match", argv=argv) == 2
    err = capsys.readouterr().err
    assert "manifest.json was changed after index run" in err and "Traceback" not in err
    with open(manifest, "w") as f:
        f.write("not json")
    assert main(["match"], job="match", argv=argv) == 2
    err = capsys.readouterr().err
    assert "is not valid JSON" in err and "Traceback" not in err
    assert lake.read_table(spark, lake_dir, "matches").count() == before  # nothing published

