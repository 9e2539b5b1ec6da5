"""In-batch softmax (InfoNCE) over candidates gathered from every rank."""
from __future__ import annotations


def in_batch_softmax_loss(user_emb, cand_emb, cand_keys, pos_keys, label_offset, temperature: float):
    """Mean cross-entropy of each user against all candidates, its own positive being the label.

    user_emb:  [B, D] float32, this rank's users (L2-normalised)
    cand_emb:  [N*B, D] float32, every rank's positives (this rank's at ``label_offset``)
    cand_keys: [N*B] int64, profile key of each candidate
    pos_keys:  [B] int64, profile key of each user's positive
    A candidate that is the same profile as the user's positive but not the label column
    (an accidental hit) is masked out instead of being pushed away.
    """
    import tensorflow as tf
    b = tf.shape(user_emb)[0]
    labels = tf.range(b) + label_offset
    logits = tf.matmul(user_emb, cand_emb, transpose_b=True) / temperature
    same = tf.equal(pos_keys[:, None], cand_keys[None, :])
    is_label = tf.equal(tf.range(tf.shape(cand_emb)[0])[None, :], labels[:, None])
    logits = tf.where(same & ~is_label, tf.constant(-1e9, logits.dtype), logits)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
