"""The two towers: MLPs from the preprocessor's vector to an L2-normalised embedding."""
from __future__ import annotations

import json
import os


def build_tower(name: str, input_dim: int, hidden_units: list, embedding_dim: int):
    """Keras model: [batch, input_dim] float32 -> [batch, embedding_dim] float32, unit L2 norm."""
    import tensorflow as tf
    inputs = tf.keras.Input(shape=(input_dim,), dtype=tf.float32, name=f"{name}_features")
    x = inputs
    for i, units in enumerate(hidden_units):
        x = tf.keras.layers.Dense(units, activation="relu", name=f"{name}_dense_{i}")(x)
    x = tf.keras.layers.Dense(embedding_dim, name=f"{name}_out")(x)
    out = tf.keras.layers.Lambda(lambda t: tf.math.l2_normalize(t, axis=1), name=f"{name}_l2")(x)
    return tf.keras.Model(inputs, out, name=name)


def save_towers(model_dir: str, user_tower, profile_tower, meta: dict) -> None:
    """Weights of both towers and ``model.json`` (what ``load_towers`` needs to rebuild them)."""
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
    tower = build_tower(which, meta["input_dim"], meta["hidden_units"], meta["embedding_dim"])
    tower.load_weights(os.path.join(model_dir, f"{which}_tower.weights.h5"))
    return tower
