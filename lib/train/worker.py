"""What each Horovod process runs, under ``horovod.spark.run`` (inside a Spark task) or under
``horovodrun`` (lib/train/horovodrun.py): ``train_worker`` reads this rank's shard through
Petastorm and calls ``fit``, the training loop proper (which takes any stream of batches).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
import warnings

# The columns of a training batch, in the order ``step`` takes them; with hard negatives
# (train.hard_negatives) each pair also brings one mined negative profile (hvalid 0: none).
BATCH_COLUMNS = ("u_dense", "u_ids", "p_dense", "p_ids", "pkey", "plogq")
HARD_COLUMNS = ("h_dense", "h_ids", "hkey", "hlogq", "hvalid")


def batch_columns(params: dict) -> tuple:
    return BATCH_COLUMNS + (HARD_COLUMNS if params.get("hard_negatives") else ())
# Checkpoints kept (the newest is used; one more in case the newest was being written).
KEEP_CHECKPOINTS = 2


def init_horovod():
    """hvd.init() and the threads of this process: the ranks on one machine share its cores,
    never more threads than cores (workers x threads <= cores)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import tensorflow as tf
    hvd.init()
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already started in this process (a reused Spark worker): its threads stand
    return hvd


def train_worker(converter, params: dict) -> dict:
    """Train on this rank's Petastorm shard of ``converter`` (a SparkDatasetConverter).

    Shards can be uneven (503 rows on one rank, 500 on the other): every rank reads an
    endless stream (num_epochs=None) and runs exactly ``steps_per_epoch`` steps, so no rank
    waits forever in an allreduce that another rank never joins.
    """
    hvd = init_horovod()
    b = params["batch_size"]
    with converter.make_tf_dataset(batch_size=b, num_epochs=None, cur_shard=hvd.rank(), shard_count=hvd.size(),
                                   shuffling_queue_capacity=4 * b, workers_count=1, seed=params["seed"]) as ds:
        it = iter(ds)
        columns = batch_columns(params)
        return fit(params, (tuple(getattr(batch, c) for c in columns) for batch in it))


def fit(params: dict, batches) -> dict:
    """The training loop, inside an initialised Horovod process. ``batches`` yields this rank's
    batches as tuples in ``batch_columns(params)`` order. Rank 0 writes a checkpoint after every
    epoch to ``params['checkpoint_dir']`` (when set) and resumes from the newest one; it
    saves the towers to ``params['out_dir']`` at the end."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from lib.train.loss import loss_fn
    from lib.train.towers import save_towers, tower_from_meta

    # Keras draws unseeded initialiser seeds from Python and numpy too: seed all three, or
    # two runs with the same seed start from different weights.
    tf.keras.utils.set_random_seed(params["seed"])
    user_tower = tower_from_meta("user", params)
    profile_tower = tower_from_meta("profile", params)
    variables = user_tower.trainable_variables + profile_tower.trainable_variables
    # A fixed per-rank batch makes the global batch grow with the ranks; the learning rate
    # grows with it (train.lr_scaling=linear, Goyal et al. 2017).
    lr = params["learning_rate"] * (hvd.size() if params["lr_scaling"] == "linear" else 1)
    opt = tf.keras.optimizers.Adam(lr)
    opt.build(variables)  # Adam's slots exist now: a checkpoint restores them, rank 0 broadcasts them
    start_epoch, history = 0, []
    ckpt_dir = params.get("checkpoint_dir") or ""
    if hvd.rank() == 0 and ckpt_dir:
        start_epoch, history = restore_checkpoint(ckpt_dir, user_tower, profile_tower, opt, params["epochs"])
    # Every rank starts from rank 0's weights and optimizer state (fresh or restored).
    start_epoch, history = hvd.broadcast_object((start_epoch, history), root_rank=0)
    hvd.broadcast_variables(variables + list(opt.variables), root_rank=0)

    loss_of = loss_fn(params["loss"], params["temperature"], params["margin"])
    use_log_q = params["loss"] == "softmax" and params["logq_correction"]
    offset = hvd.rank() * params["batch_size"]

    hard = bool(params.get("hard_negatives"))

    def gather(x):
        """Every rank's rows of ``x``, with the gradient of a sum. Horovod's allgather averages
        the incoming gradient over ranks in backprop, which would give the candidate side
        1/N of its gradient (then 2 ranks would not train like 1 rank with the same global
        batch): scaling the gradient by N, with the forward value unchanged, undoes that."""
        y = hvd.allgather(x)
        n = tf.cast(hvd.size(), y.dtype)
        return y + (n - 1) * (y - tf.stop_gradient(y))  # forward: exactly y

    @tf.function
    def step(u_dense, u_ids, p_dense, p_ids, pkey, plogq, *h):
        with tf.GradientTape() as tape:
            ue = user_tower([u_dense, u_ids], training=True)
            pe = profile_tower([p_dense, p_ids], training=True)
            # Negatives from every rank: N ranks see what one rank with the global batch sees.
            cand, keys, log_q, valid = gather(pe), hvd.allgather(pkey), hvd.allgather(plogq), None
            if hard:  # every rank's mined negatives join the candidates after the positives
                h_dense, h_ids, hkey, hlogq, hvalid = h
                he = profile_tower([h_dense, h_ids], training=True)
                valid = tf.concat([tf.ones_like(keys, tf.bool), hvd.allgather(tf.cast(hvalid, tf.bool))], 0)
                cand = tf.concat([cand, gather(he)], 0)
                keys = tf.concat([keys, hvd.allgather(hkey)], 0)
                log_q = tf.concat([log_q, hvd.allgather(hlogq)], 0)
            loss = loss_of(ue, cand, keys, pkey, offset, log_q if use_log_q else None, valid)
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss, tf.shape(cand)[0]

    steps, epochs, fault = params["steps_per_epoch"], params["epochs"], params.get("fault") or {}
    started, candidates, step_losses, ran, rates = time.time(), 0, [], 0, {}
    for epoch in range(start_epoch, epochs):
        t0, losses = time.time(), []
        for s in range(steps):
            if fault and fault.get("rank") == hvd.rank() and fault.get("epoch") == epoch + 1 and fault.get("step") == s:
                # Fault injection (tests): this rank dies as under the OOM killer, no clean-up.
                print(f"[train] fault injection: SIGKILL of rank {hvd.rank()} in epoch {epoch + 1}, step {s}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            loss, candidates = step(*next(batches))
            losses.append(float(loss))
            ran += 1
        # Metrics averaged over ranks (one allreduce per epoch): the global loss of every step.
        step_losses = [float(x) for x in hvd.allreduce(tf.constant(losses, tf.float64), op=hvd.Average).numpy()]
        history.append(sum(step_losses) / steps)
        took = time.time() - t0
        rates[epoch + 1] = round(steps * params["batch_size"] * hvd.size() / took, 1)
        if hvd.rank() == 0:
            if ckpt_dir:
                write_checkpoint(ckpt_dir, epoch + 1, history, user_tower, profile_tower, opt)
            print(f"[train] epoch {epoch + 1}/{epochs} loss {history[-1]:.4f} "
                  f"{rates[epoch + 1]:,.0f} examples/s, "
                  f"about {took * (epochs - epoch - 1):.0f}s left", flush=True)
    print(f"[train] rank {hvd.rank()}/{hvd.size()} ran {ran} steps", flush=True)
    if hvd.rank() == 0 and params.get("out_dir"):
        save_towers(params["out_dir"], user_tower, profile_tower, {
            **{k: params[k] for k in ("dense_dim", "bag_layout", "bag_dim", "hidden_units", "embedding_dim", "temperature",
                                      "epochs", "batch_size", "learning_rate", "steps_per_epoch", "dropout",
                                      "loss", "logq_correction", "margin", "lr_scaling")},
            "hard_negatives": hard,
            "effective_learning_rate": lr, "num_proc": hvd.size(), "final_loss": history[-1],
            "loss_history": history, "resumed_from_epoch": start_epoch,
            "candidates_per_step": int(candidates),  # every rank's positives (and mined negatives)
            "epoch_examples_per_s": rates,  # the epochs run by this process (not those resumed)
            "train_seconds": round(time.time() - started, 1)})
    return {"rank": hvd.rank(), "size": hvd.size(), "loss_history": history, "resumed_from_epoch": start_epoch,
            "candidates_per_step": int(candidates), "last_epoch_step_losses": step_losses}


# --- checkpoints (rank 0) -------------------------------------------------------------
def _checkpoint(user_tower, profile_tower, opt):
    import tensorflow as tf
    return tf.train.Checkpoint(user=user_tower, profile=profile_tower, optimizer=opt)


def write_checkpoint(ckpt_dir: str, epoch: int, history: list, user_tower, profile_tower, opt) -> None:
    """Weights and optimizer state after ``epoch``; ``progress.json`` is replaced last, so a
    crash while writing leaves the previous checkpoint the one in force."""
    prefix = os.path.join(ckpt_dir, f"epoch-{epoch:04d}", "ckpt")
    _checkpoint(user_tower, profile_tower, opt).write(prefix)
    tmp = os.path.join(ckpt_dir, "progress.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"epoch": epoch, "loss_history": history, "checkpoint": os.path.relpath(prefix, ckpt_dir)}, f)
    os.replace(tmp, os.path.join(ckpt_dir, "progress.json"))
    old = sorted(d for d in os.listdir(ckpt_dir) if d.startswith("epoch-"))[:-KEEP_CHECKPOINTS]
    for d in old:
        shutil.rmtree(os.path.join(ckpt_dir, d), ignore_errors=True)


def restore_checkpoint(ckpt_dir: str, user_tower, profile_tower, opt, epochs: int):
    """(epochs done, loss history) of the newest checkpoint, restored into the towers and the
    optimizer; (0, []) when there is none."""
    path = os.path.join(ckpt_dir, "progress.json")
    if not os.path.exists(path):
        return 0, []
    with open(path, encoding="utf-8") as f:
        progress = json.load(f)
    _checkpoint(user_tower, profile_tower, opt).read(
        os.path.join(ckpt_dir, progress["checkpoint"])).assert_existing_objects_matched()
    done = min(int(progress["epoch"]), epochs)
    print(f"[train] resuming after epoch {done}/{epochs} from the checkpoint in {ckpt_dir}", flush=True)
    return done, list(progress["loss_history"])[:done]


# A small training set still gets this many steps an epoch: its per-rank batch shrinks below
# train.batch_size (the most) rather than the model seeing a handful of updates.
MIN_STEPS_PER_EPOCH = 50


def per_rank_batch(rows: int, batch_size: int, num_proc: int) -> int:
    """train.batch_size, or less when the training set is too small for MIN_STEPS_PER_EPOCH
    steps of it (never under 1)."""
    return max(1, min(batch_size, rows // (num_proc * MIN_STEPS_PER_EPOCH)))


def steps_per_epoch(rows: int, batch_size: int, num_proc: int) -> int:
    """Steps for every rank so that one epoch covers about all rows once."""
    return max(1, math.ceil(rows / (batch_size * num_proc)))
