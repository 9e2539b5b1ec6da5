"""Horovod done right, with real Horovod processes (Gloo): gathered negatives make 2 ranks equal
1 rank, uneven shards never hang, a SIGKILL of one rank is resumed from the checkpoint."""
import json
import os

import numpy as np
import pytest

from tests.conftest import ROOT

DENSE, BAG = 6, {"field": "city", "start": 0, "length": 2, "size": 30}


def _params(**over):
    p = {"dense_dim": DENSE, "bag_layout": [BAG], "bag_dim": 4, "hidden_units": [16], "embedding_dim": 8,
         "temperature": 0.1, "epochs": 1, "batch_size": 32, "learning_rate": 0.01, "seed": 3,
         "dropout": 0.0, "loss": "softmax", "logq_correction": True, "margin": 0.2, "lr_scaling": "none",
         "steps_per_epoch": 50, "out_dir": "", "checkpoint_dir": "", "fault": {}}
    p.update(over)
    return p


def _rows(n: int, seed: int = 0) -> dict:
    """Training pairs whose positive depends on the user (something to learn), with repeated
    profiles (accidental hits) and their log share of the positives (logQ)."""
    rng = np.random.default_rng(seed)
    pkey = rng.integers(0, 120, n).astype(np.int64)
    u_dense = rng.normal(size=(n, DENSE)).astype(np.float32)
    p_dense = (u_dense[:, ::-1] + 0.3 * rng.normal(size=(n, DENSE))).astype(np.float32)
    counts = np.bincount(pkey, minlength=120)
    return {"u_dense": u_dense, "u_ids": rng.integers(0, 30, (n, 2)).astype(np.int32),
            "p_dense": p_dense, "p_ids": (pkey[:, None] % 30 * np.ones((1, 2))).astype(np.int32),
            "pkey": pkey, "plogq": np.log(counts[pkey] / n).astype(np.float32)}


def _fit_on_rows(rows: dict, params: dict) -> dict:
    """In each Horovod process: step t of rank r reads rows [t*G + r*b, t*G + (r+1)*b) with b
    the per-rank batch and G = b * ranks, so every global batch is the same rows in the same
    order whatever the number of ranks."""
    from lib.train.worker import BATCH_COLUMNS, fit, init_horovod
    hvd = init_horovod()
    b, r, n = params["batch_size"], hvd.rank(), hvd.size()

    def batches():
        t = 0
        while True:
            lo = t * b * n + r * b
            yield tuple(rows[c][lo:lo + b] for c in BATCH_COLUMNS)
            t += 1

    return fit(params, batches())


def _horovod_run(fn, args, num_proc):
    import horovod.runner
    # The processes import this test module and lib by name.
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
    return horovod.runner.run(fn, args=args, num_proc=num_proc, use_gloo=True, hosts=f"localhost:{num_proc}")


def test_two_ranks_with_half_the_batch_equal_one_rank():
    """Negatives gathered across ranks: the 2-rank run sees the same B candidates per step and
    follows the same trajectory as 1 rank with batch B (same learning rate, seed, data order)."""
    steps, b = 50, 32
    rows = _rows(steps * b)
    one = _horovod_run(_fit_on_rows, (rows, _params(batch_size=b)), 1)
    two = _horovod_run(_fit_on_rows, (rows, _params(batch_size=b // 2)), 2)
    assert [r["size"] for r in one] == [1] and [r["size"] for r in two] == [2, 2]
    assert one[0]["candidates_per_step"] == b
    assert [r["candidates_per_step"] for r in two] == [b, b]  # B gathered, not B/2 per rank
    l1, l2 = one[0]["last_epoch_step_losses"], two[0]["last_epoch_step_losses"]
    assert len(l1) == len(l2) == steps
    assert l1[-1] < 0.8 * l1[0]  # it trained
    assert abs(l2[-1] - l1[-1]) / l1[-1] < 1e-3, (l1[-1], l2[-1])
    # Without gathering, rank 0's first-step loss would be over 16 candidates, not 32: far lower.
    assert abs(l2[0] - l1[0]) / l1[0] < 1e-4


@pytest.fixture
def converter(spark, tmp_path):
    """1,001 training pairs in 3 Parquet files through Petastorm: shards of unequal size."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter
    rows = _rows(1001, seed=5)
    records = [{c: (rows[c][i].tolist()) for c in rows} for i in range(1001)]
    df = spark.createDataFrame(records, "u_dense array<float>, u_ids array<int>, p_dense array<float>, "
                                        "p_ids array<int>, pkey long, plogq float").repartition(3)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, "file://" + str(tmp_path / "petastorm"))
    conv = make_spark_converter(df, parquet_row_group_size_bytes=1 << 20)
    yield conv
    conv.delete()


def _horovodrun(converter, params, tmp_path, timeout=240):
    from lib.train.job import run_horovodrun
    run_horovodrun(converter, params, 2, "localhost:2", str(tmp_path / "plan.json"), timeout_s=timeout)


def test_uneven_shards_finish_under_horovodrun(converter, tmp_path, capfd):
    """1,001 rows over 2 ranks (Petastorm gives them unequal shards): every rank runs the same
    number of steps and the run ends (a rank with more steps would wait forever)."""
    from lib.train.worker import steps_per_epoch
    out = tmp_path / "model"
    steps = steps_per_epoch(1001, 64, 2)
    _horovodrun(converter, _params(batch_size=64, epochs=2, steps_per_epoch=steps, out_dir=str(out)), tmp_path)
    meta = json.loads((out / "model.json").read_text())
    assert meta["num_proc"] == 2 and len(meta["loss_history"]) == 2
    printed = capfd.readouterr().out
    assert f"rank 0/2 ran {2 * steps} steps" in printed and f"rank 1/2 ran {2 * steps} steps" in printed


def test_sigkill_of_one_rank_is_resumed_from_the_last_checkpoint(converter, tmp_path, capfd):
    from lib.train.worker import steps_per_epoch
    ckpt, out = tmp_path / "ckpt", tmp_path / "model"
    steps = steps_per_epoch(1001, 64, 2)
    params = _params(batch_size=64, epochs=3, steps_per_epoch=steps, out_dir=str(out), checkpoint_dir=str(ckpt))
    with pytest.raises(RuntimeError, match="horovodrun exited"):
        _horovodrun(converter, {**params, "fault": {"rank": 1, "epoch": 2, "step": 3}}, tmp_path)
    assert "SIGKILL of rank 1 in epoch 2" in capfd.readouterr().out
    progress = json.loads((ckpt / "progress.json").read_text())
    assert progress["epoch"] == 1 and not out.exists()

    _horovodrun(converter, params, tmp_path)
    assert "resuming after epoch 1/3" in capfd.readouterr().out
    meta = json.loads((out / "model.json").read_text())
    assert meta["resumed_from_epoch"] == 1 and len(meta["loss_history"]) == 3
    assert meta["loss_history"][0] == progress["loss_history"][0]  # epoch 1 came from the checkpoint
    assert json.loads((ckpt / "progress.json").read_text())["epoch"] == 3


def test_a_small_training_set_gets_a_smaller_batch_not_fewer_steps():
    from lib.train.worker import MIN_STEPS_PER_EPOCH, per_rank_batch, steps_per_epoch
    assert MIN_STEPS_PER_EPOCH == 50
    assert per_rank_batch(768_448, 1024, 2) == 1024  # 375 steps of the full batch
    assert per_rank_batch(3_000, 1024, 2) == 30 and steps_per_epoch(3_000, 30, 2) == 50
    assert per_rank_batch(99, 1024, 2) == 1  # never 0
