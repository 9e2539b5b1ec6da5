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


U = np.array([[1, 0], [0, 1]], np.float32)
C = np.array([[0.6, 0.8], [0.8, -0.6], [1, 0], [0, 1]], np.float32)  # 2 ranks x 2 rows; rank 1's users
# Cosine scores: user 0 -> [0.6, 0.8, 1, 0], user 1 -> [0.8, -0.6, 0, 1]; labels are columns 2 and 3.


def _args(tf, keys=(10, 11, 12, 13)):
    keys = np.array(keys, np.int64)
    return tf.constant(U), tf.constant(C), tf.constant(keys), tf.constant(np.array([12, 13], np.int64)), 2


def test_log_q_correction_by_hand():
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import in_batch_softmax_loss
    q = np.array([0.1, 0.2, 0.3, 0.4])
    got = float(in_batch_softmax_loss(*_args(tf), 0.5, tf.constant(np.log(q), tf.float32)))
    row0 = [1.2 - np.log(0.1), 1.6 - np.log(0.2), 2.0 - np.log(0.3), 0.0 - np.log(0.4)]
    row1 = [1.6 - np.log(0.1), -1.2 - np.log(0.2), 0.0 - np.log(0.3), 2.0 - np.log(0.4)]
    expect = (-(row0[2] - np.log(np.exp(row0).sum())) - (row1[3] - np.log(np.exp(row1).sum()))) / 2
    assert got == pytest.approx(expect, rel=1e-5)


def softplus(x):
    return np.log1p(np.exp(x))


def test_bce_with_sampled_negatives_by_hand():
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import bce_loss
    got = float(bce_loss(*_args(tf), 0.5))
    row0 = softplus(-2.0) + np.mean([softplus(1.2), softplus(1.6), softplus(0.0)])
    row1 = softplus(-2.0) + np.mean([softplus(1.6), softplus(-1.2), softplus(0.0)])
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # Column 1 is user 0's own positive profile (key 12) at another row: not a negative for it.
    got = float(bce_loss(*_args(tf, keys=(10, 12, 12, 13)), 0.5))
    row0 = softplus(-2.0) + np.mean([softplus(1.2), softplus(0.0)])
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_triplet_by_hand():
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import triplet_loss
    # margin 0.5: user 0: max(0, .5-1+.6)=.1, max(0, .5-1+.8)=.3, 0; user 1: .3, 0, 0; 6 pairs.
    assert float(triplet_loss(*_args(tf), 0.5)) == pytest.approx(0.7 / 6, rel=1e-5)
    # With column 1 an accidental hit of user 0: 5 pairs, 0.1 + 0.3.
    assert float(triplet_loss(*_args(tf, keys=(10, 12, 12, 13)), 0.5)) == pytest.approx(0.4 / 5, rel=1e-5)


def test_empty_candidate_slots_are_never_negatives():
    """A pair without a hard negative leaves an empty slot (cand_valid false): every loss
    ignores that column for every user, as if it were not there."""
    tf = pytest.importorskip("tensorflow")
    from lib.train.loss import bce_loss, in_batch_softmax_loss, triplet_loss
    valid = tf.constant([True, False, True, True])
    # Softmax: column 1 gone from both rows.
    row0 = -(2.0 - np.log(np.exp([1.2, 2.0, 0.0]).sum()))
    row1 = -(2.0 - np.log(np.exp([1.6, 0.0, 2.0]).sum()))
    got = float(in_batch_softmax_loss(*_args(tf), 0.5, None, valid))
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # BCE: negatives of user 0 are columns 0 and 3, of user 1 columns 0 and 2.
    expect = (softplus(-2.0) + np.mean([softplus(1.2), softplus(0.0)])
              + softplus(-2.0) + np.mean([softplus(1.6), softplus(0.0)])) / 2
    assert float(bce_loss(*_args(tf), 0.5, valid)) == pytest.approx(expect, rel=1e-5)
    # Triplet, margin 0.5: user 0: .1 (col 0), 0 (col 3); user 1: .3 (col 0), 0 (col 2): 4 pairs.
    assert float(triplet_loss(*_args(tf), 0.5, valid)) == pytest.approx(0.4 / 4, rel=1e-5)
