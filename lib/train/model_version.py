"""One model version, read back: the user tower, the profile tower and the preprocessor they
were trained on (``models/<version>/``), enough to embed a profile with no Spark and no lake."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lib.errors import UserError


@dataclass
class ModelVersion:
    model_dir: str
    version: str
    preprocessor: object  # lib.features.preprocessor.Preprocessor
    user_tower: object
    profile_tower: object

    def embed(self, profiles: list, which: str = "profile", music: dict | None = None, as_of=None) -> np.ndarray:
        """[len(profiles), embedding_dim] float32: each profile (a dict of profile columns)
        through the preprocessor and the ``which`` tower ('user' or 'profile'). ``music`` maps
        a profile id to its music preference rows; ``as_of`` as in ``transform_one``."""
        if which not in ("user", "profile"):
            raise UserError(f"which must be 'user' or 'profile', got {which!r}")
        if isinstance(profiles, dict) or not isinstance(profiles, (list, tuple)):
            raise UserError(f"profiles must be a list of profile dicts, got {type(profiles).__name__}")
        if music is not None and not isinstance(music, dict):
            raise UserError(f"music must map a profile id to its music rows, got {type(music).__name__}")
        bad = [type(p).__name__ for p in profiles if not isinstance(p, dict)]
        if bad:
            raise UserError(f"each profile must be a dict of profile columns, got {bad[0]}")
        music = music or {}
        rows = [self.preprocessor.transform_one(p, music=music.get(p.get("id") if isinstance(p.get("id"), str) else None, []), as_of=as_of) for p in profiles]
        if not rows:
            return np.zeros((0, self.user_tower.output_shape[-1]), np.float32)
        dense, ids = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        tower = self.user_tower if which == "user" else self.profile_tower
        return tower([dense, ids], training=False).numpy()


def load_model_version(model_dir: str) -> ModelVersion:
    """The model version in ``model_dir`` (as published by ``train``)."""
    from lib import lake
    from lib.features.preprocessor import Preprocessor
    from lib.train.towers import load_tower
    if not os.path.isdir(model_dir):
        raise UserError(f"no model version at {model_dir}")
    version = lake.read_json(os.path.join(model_dir, "version.json"))["model_version"]
    pre = Preprocessor.load(os.path.join(model_dir, "preprocessor.json"))
    return ModelVersion(model_dir, version, pre, load_tower(model_dir, "user"), load_tower(model_dir, "profile"))
