import numpy as np
import pytest


def reference_loss(u, c, labels, mask, t):
    """Softmax cross-entropy written out by hand, masked entries removed from the sum."""
    logits = u @ c.T / t
    total = 0.0
    for i in range(len(u)):
        keep = [j for j in range(len(c)) if not mask[i][j]]
        z = np.array([logits[i, j] for j in keep])
        total += -(logits[i, labels[i]] - np.log(np.exp(z).sum()))
    return total / len(u)


def test_in_batch_softmax_by_hand():
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import in_batch_softmax_loss
    u = np.array([[1, 0], [0, 1]], np.float32)
    c = np.array([[0.6, 0.8], [0.8, -0.6], [1, 0], [0, 1]], np.float32)  # 2 ranks x 2 rows
    keys = np.array([10, 11, 12, 13], np.int64)
    got = float(in_batch_softmax_loss(tf.constant(u), tf.constant(c), tf.constant(keys),
                                      tf.constant(keys[2:]), 2, 0.5))
    # Rank 1's users: labels are columns 2 and 3; user 0 row: logits [1.2, 1.6, 2, 0].
    row0 = -(2.0 - np.log(np.exp([1.2, 1.6, 2.0, 0.0]).sum()))
    row1 = -(2.0 - np.log(np.exp([1.6, -1.2, 0.0, 2.0]).sum()))
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_accidental_hits_are_masked():
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import in_batch_softmax_loss
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 4)).astype(np.float32)
    c = rng.normal(size=(3, 4)).astype(np.float32)
    keys = np.array([5, 7, 5], np.int64)  # rows 0 and 2 share their positive profile
    got = float(in_batch_softmax_loss(tf.constant(u), tf.constant(c), tf.constant(keys), tf.constant(keys), 0, 1.0))
    mask = [[False, False, True], [False, False, False], [True, False, False]]
    assert got == pytest.approx(reference_loss(u, c, [0, 1, 2], mask, 1.0), rel=1e-5)
