"""The two towers: the preprocessor's dense vector and embedding-bag ids -> an L2-normalised
embedding. Both towers have the same shape of input (symmetric), with their own weights."""
from __future__ import annotations

import json
import os


def _embedding_bag(ids, bag: dict, dim: int, name: str):
    """Mean of the embeddings of a field's ids (0 = empty slot, left out); zeros when all empty."""
    import tensorflow as tf
    x = ids[:, bag["start"]:bag["start"] + bag["length"]]
    emb = tf.keras.layers.Embedding(bag["size"], dim, name=f"{name}_bag_{bag['field']}")(x)
    mask = tf.cast(x > 0, emb.dtype)[:, :, None]
    return tf.reduce_sum(emb * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def build_tower(name: str, dense_dim: int, bag_layout: list, hidden_units: list, embedding_dim: int,
                bag_dim: int = 16, dropout: float = 0.0):
    """Keras model: ([batch, dense_dim] float32, [batch, id_slots] int32) -> [batch, embedding_dim]
    float32 of unit L2 norm."""
    import tensorflow as tf
    dense = tf.keras.Input(shape=(dense_dim,), dtype=tf.float32, name=f"{name}_dense")
    id_slots = sum(b["length"] for b in bag_layout)
    ids = tf.keras.Input(shape=(id_slots,), dtype=tf.int32, name=f"{name}_ids")
    x = tf.keras.layers.Concatenate(name=f"{name}_inputs")(
        [dense] + [_embedding_bag(ids, b, bag_dim, name) for b in bag_layout]) if bag_layout else dense
    for i, units in enumerate(hidden_units):
        x = tf.keras.layers.Dense(units, activation="relu", name=f"{name}_dense_{i}")(x)
        if dropout > 0:
            x = tf.keras.layers.Dropout(dropout, name=f"{name}_dropout_{i}")(x)
    x = tf.keras.layers.Dense(embedding_dim, name=f"{name}_out")(x)
    out = tf.keras.layers.Lambda(lambda t: tf.math.l2_normalize(t, axis=1), name=f"{name}_l2")(x)
    return tf.keras.Model([dense, ids], out, name=name)


def tower_from_meta(which: str, meta: dict):
    return build_tower(which, meta["dense_dim"], meta["bag_layout"], meta["hidden_units"], meta["embedding_dim"],
                       meta.get("bag_dim", 16), meta.get("dropout", 0.0))


def save_towers(model_dir: str, user_tower, profile_tower, meta: dict) -> None:
    """Weights of both towers and ``model.json`` (what ``load_tower`` needs to rebuild them)."""
    os.makedirs(model_dir, exist_ok=True)
    user_tower.save_weights(os.path.join(model_dir, "user_tower.weights.h5"))
    profile_tower.save_weights(os.path.join(model_dir, "profile_tower.weights.h5"))
    with open(os.path.join(model_dir, "model.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def load_model_meta(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as f:
        return json.load(f)


def load_tower(model_dir: str, which: str):
    """``which`` is 'user' or 'profile'; returns the Keras tower with its trained weights."""
    meta = load_model_meta(model_dir)
    if "dense_dim" not in meta:
        from lib.errors import UserError
        raise UserError(f"model {model_dir} was trained on an older feature format; run 'features' and 'train' again")
    tower = tower_from_meta(which, meta)
    tower.load_weights(os.path.join(model_dir, f"{which}_tower.weights.h5"))
    return tower
