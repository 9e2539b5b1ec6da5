"""The losses, over candidates gathered from every rank (``train.loss`` picks one).

Every loss scores this rank's users against all candidates of the global batch: user i's
own positive sits at column ``label_offset + i``, every other column is a negative. A
candidate that is the same profile as the user's positive but not its label column (an
accidental hit) is masked: it is neither pushed away nor counted.

user_emb:  [B, D] float32, this rank's users (L2-normalised)
cand_emb:  [C, D] float32, every rank's positives (this rank's at ``label_offset``)
cand_keys: [C] int64, profile key of each candidate
pos_keys:  [B] int64, profile key of each user's positive
cand_valid: [C] bool (optional), false for a candidate slot that holds nothing (a pair with
           no hard negative): never a negative for anyone
"""
from __future__ import annotations

LOSSES = ("softmax", "bce", "triplet")


def _scores_labels_negatives(user_emb, cand_emb, cand_keys, pos_keys, label_offset, cand_valid=None):
    """(scores [B, C] = u.c, label column per row [B], negative mask [B, C]: true where the
    column is a real negative for the row)."""
    import tensorflow as tf
    b = tf.shape(user_emb)[0]
    labels = tf.range(b) + label_offset
    scores = tf.matmul(user_emb, cand_emb, transpose_b=True)
    is_label = tf.equal(tf.range(tf.shape(cand_emb)[0])[None, :], labels[:, None])
    same = tf.equal(pos_keys[:, None], cand_keys[None, :])
    negative = ~is_label & ~same
    if cand_valid is not None:
        negative = negative & tf.cast(cand_valid, tf.bool)[None, :]
    return scores, labels, negative


def in_batch_softmax_loss(user_emb, cand_emb, cand_keys, pos_keys, label_offset, temperature: float,
                          cand_log_q=None, cand_valid=None):
    """Mean cross-entropy of each user against all candidates, its own positive the label.

    ``cand_log_q`` [C]: log of each candidate's sampling probability (its share of the
    positives). Popular profiles appear as in-batch negatives more often than the catalogue
    would, so with it the logits become u.c / t - log q (logQ correction, Yi et al. 2019).
    """
    import tensorflow as tf
    scores, labels, negative = _scores_labels_negatives(user_emb, cand_emb, cand_keys, pos_keys, label_offset,
                                                        cand_valid)
    logits = scores / temperature
    if cand_log_q is not None:
        logits = logits - tf.cast(cand_log_q, logits.dtype)[None, :]
    keep = negative | tf.equal(tf.range(tf.shape(cand_emb)[0])[None, :], labels[:, None])
    logits = tf.where(keep, logits, tf.constant(-1e9, logits.dtype))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def bce_loss(user_emb, cand_emb, cand_keys, pos_keys, label_offset, temperature: float, cand_valid=None):
    """Binary cross-entropy, the other candidates as sampled negatives: per user
    -log sigmoid(s+ / t) + mean over its negatives of -log(1 - sigmoid(s- / t)), averaged."""
    import tensorflow as tf
    scores, labels, negative = _scores_labels_negatives(user_emb, cand_emb, cand_keys, pos_keys, label_offset,
                                                        cand_valid)
    logits = scores / temperature
    pos = tf.gather(logits, labels, axis=1, batch_dims=1)
    neg_mask = tf.cast(negative, logits.dtype)
    neg = tf.reduce_sum(tf.nn.softplus(logits) * neg_mask, axis=1) / tf.maximum(tf.reduce_sum(neg_mask, axis=1), 1.0)
    return tf.reduce_mean(tf.nn.softplus(-pos) + neg)


def triplet_loss(user_emb, cand_emb, cand_keys, pos_keys, label_offset, margin: float, cand_valid=None):
    """Mean over every (user, negative) pair of max(0, margin - s+ + s-), on cosine scores."""
    import tensorflow as tf
    scores, labels, negative = _scores_labels_negatives(user_emb, cand_emb, cand_keys, pos_keys, label_offset,
                                                        cand_valid)
    pos = tf.gather(scores, labels, axis=1, batch_dims=1)
    hinge = tf.nn.relu(margin - pos[:, None] + scores) * tf.cast(negative, scores.dtype)
    return tf.reduce_sum(hinge) / tf.maximum(tf.reduce_sum(tf.cast(negative, scores.dtype)), 1.0)


def loss_fn(name: str, temperature: float, margin: float):
    """f(user_emb, cand_emb, cand_keys, pos_keys, label_offset, cand_log_q, cand_valid) for ``train.loss``."""
    if name == "softmax":
        return lambda u, c, ck, pk, off, lq, cv=None: in_batch_softmax_loss(u, c, ck, pk, off, temperature, lq, cv)
    if name == "bce":
        return lambda u, c, ck, pk, off, lq, cv=None: bce_loss(u, c, ck, pk, off, temperature, cv)
    if name == "triplet":
        return lambda u, c, ck, pk, off, lq, cv=None: triplet_loss(u, c, ck, pk, off, margin, cv)
    raise ValueError(f"unknown loss {name!r}; one of {LOSSES}")
