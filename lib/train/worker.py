"""What each Horovod process runs (inside a Spark task, via ``horovod.spark.run``)."""
from __future__ import annotations

import math
import os
import time
import warnings


def train_worker(converter, params: dict) -> dict:
    """Train both towers on this rank's shard; rank 0 saves them to ``params['out_dir']``.

    Every rank runs exactly ``steps_per_epoch`` steps per epoch, whatever the size of its
    shard (Petastorm shards can be uneven; a rank with more steps would hang in allreduce),
    by reading an endless stream (num_epochs=None) and stopping after a fixed count.
    """
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from lib.train.loss import in_batch_softmax_loss
    from lib.train.towers import save_towers, tower_from_meta

    hvd.init()
    # Threads: the ranks on one machine share its cores, never more threads than cores.
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(params["seed"])

    b = params["batch_size"]
    user_tower = tower_from_meta("user", params)
    profile_tower = tower_from_meta("profile", params)
    variables = user_tower.trainable_variables + profile_tower.trainable_variables
    # Horovod: every rank starts from rank 0's weights.
    hvd.broadcast_variables(variables, root_rank=0)
    opt = tf.keras.optimizers.Adam(params["learning_rate"])
    offset = hvd.rank() * b

    @tf.function
    def step(u_dense, u_ids, p_dense, p_ids, pkey):
        with tf.GradientTape() as tape:
            ue = user_tower([u_dense, u_ids], training=True)
            pe = profile_tower([p_dense, p_ids], training=True)
            # Horovod: negatives from every rank, so N ranks see what one rank with N*B would.
            loss = in_batch_softmax_loss(ue, hvd.allgather(pe), hvd.allgather(pkey), pkey, offset,
                                         params["temperature"])
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    steps = params["steps_per_epoch"]
    history = []
    started = time.time()
    with converter.make_tf_dataset(batch_size=b, num_epochs=None, cur_shard=hvd.rank(), shard_count=hvd.size(),
                                   shuffling_queue_capacity=4 * b, workers_count=1, seed=params["seed"]) as ds:
        it = iter(ds)
        for epoch in range(params["epochs"]):
            t0, total = time.time(), 0.0
            for _ in range(steps):
                batch = next(it)
                total += float(step(batch.u_dense, batch.u_ids, batch.p_dense, batch.p_ids, batch.pkey))
            # Horovod: the epoch's loss averaged over ranks.
            mean = float(hvd.allreduce(tf.constant(total / steps), op=hvd.Average))
            history.append(mean)
            if hvd.rank() == 0:
                took = time.time() - t0
                left = took * (params["epochs"] - epoch - 1)
                print(f"[train] epoch {epoch + 1}/{params['epochs']} loss {mean:.4f} "
                      f"{steps * b * hvd.size() / took:,.0f} examples/s, about {left:.0f}s left", flush=True)
    if hvd.rank() == 0:
        save_towers(params["out_dir"], user_tower, profile_tower, {
            **{k: params[k] for k in ("dense_dim", "bag_layout", "bag_dim", "hidden_units", "embedding_dim", "temperature",
                                      "epochs", "batch_size", "learning_rate", "steps_per_epoch")},
            "num_proc": hvd.size(), "final_loss": history[-1], "loss_history": history,
            "train_seconds": round(time.time() - started, 1)})
    return {"rank": hvd.rank(), "size": hvd.size(), "loss_history": history}


def steps_per_epoch(rows: int, batch_size: int, num_proc: int) -> int:
    """Steps for every rank so that one epoch covers about all rows once."""
    return max(1, math.ceil(rows / (batch_size * num_proc)))
