"""The fitted preprocessor: plain Python and numpy, no Spark needed to transform.

The same object transforms training data and bulk inference (inside ``mapInPandas`` on the
executors) and a single new profile (``transform_one``). Layout of the output vector, in
order (see ``feature_names``):

- one-hot per categorical field: [missing, other, v1..vN] (vocabulary fitted, top N)
- one-hot per extra attribute key (OkCupid's body_type, diet, ...): same layout
- multi-hot per list field (interests, genres): one slot per fitted value
- per numeric field: standardised value (0 when missing) and a missing indicator

Names, photos and bios are not inputs: they are never read here.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

CATEGORICAL = ("gender", "sexual_orientation", "relationship_goal", "education_level", "drinking_habits",
               "smoking_habits", "location", "job_title", "group_id")
MULTI_HOT = ("interests", "genres")
NUMERIC = ("age", "height")
INPUT_COLUMNS = ("id",) + CATEGORICAL + MULTI_HOT + NUMERIC + ("attributes",)


@dataclass
class Preprocessor:
    version: str
    categorical: dict = field(default_factory=dict)  # field -> [values]
    attributes: dict = field(default_factory=dict)  # attribute key -> [values]
    multi_hot: dict = field(default_factory=dict)  # field -> [values]
    numeric: dict = field(default_factory=dict)  # field -> [mean, std]

    def __post_init__(self):
        # The vector layout follows key order: make it canonical (sorted), so a preprocessor
        # read back from JSON lays out vectors exactly as the one that was fitted.
        for name in ("categorical", "attributes", "multi_hot", "numeric"):
            setattr(self, name, dict(sorted(getattr(self, name).items())))

    # --- layout ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return (sum(len(v) + 2 for v in self.categorical.values())
                + sum(len(v) + 2 for v in self.attributes.values())
                + sum(len(v) for v in self.multi_hot.values()) + 2 * len(self.numeric))

    def feature_names(self) -> list[str]:
        names = []
        for kind, table in (("cat", self.categorical), ("attr", self.attributes)):
            for f, vocab in table.items():
                names += [f"{kind}:{f}=<missing>", f"{kind}:{f}=<other>"] + [f"{kind}:{f}={v}" for v in vocab]
        for f, vocab in self.multi_hot.items():
            names += [f"multi:{f}={v}" for v in vocab]
        for f in self.numeric:
            names += [f"num:{f}", f"num:{f}=<missing>"]
        return names

    # --- transform ------------------------------------------------------------------
    def transform(self, pdf) -> np.ndarray:
        """[len(pdf), dim] float32 for a pandas DataFrame with the columns of ``INPUT_COLUMNS``
        (absent columns count as missing)."""
        n = len(pdf)
        out = np.zeros((n, self.dim), dtype=np.float32)
        rows = np.arange(n)
        col = 0
        for f, vocab in self.categorical.items():
            values = pdf[f] if f in pdf else [None] * n
            out[rows, col + self._one_hot_index(values, vocab)] = 1.0
            col += len(vocab) + 2
        attrs = [_as_dict(a) for a in (pdf["attributes"] if "attributes" in pdf else [None] * n)]
        for key, vocab in self.attributes.items():
            out[rows, col + self._one_hot_index([a.get(key) for a in attrs], vocab)] = 1.0
            col += len(vocab) + 2
        for f, vocab in self.multi_hot.items():
            index = {v: i for i, v in enumerate(vocab)}
            values = pdf[f] if f in pdf else [None] * n
            for r, items in enumerate(values):
                for item in (items if items is not None else ()):
                    j = index.get(item)
                    if j is not None:
                        out[r, col + j] = 1.0
            col += len(vocab)
        for f, (mean, std) in self.numeric.items():
            x = np.asarray(pdf[f] if f in pdf else [None] * n, dtype=np.float64)  # None -> nan
            missing = np.isnan(x)
            out[:, col] = np.where(missing, 0.0, (x - mean) / std).astype(np.float32)
            out[:, col + 1] = missing.astype(np.float32)
            col += 2
        return out

    def transform_one(self, profile: dict) -> np.ndarray:
        """[dim] float32 for one profile given as a dict (a new user, no Spark)."""
        import pandas as pd
        row = {c: [profile.get(c)] for c in INPUT_COLUMNS}
        return self.transform(pd.DataFrame(row))[0]

    @staticmethod
    def _one_hot_index(values, vocab) -> np.ndarray:
        index = {v: i + 2 for i, v in enumerate(vocab)}
        return np.fromiter((0 if _missing(v) else index.get(v, 1) for v in values), dtype=np.int64,
                           count=len(values))

    # --- persistence ----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessor":
        return cls(**json.loads(text))

    def save(self, path: str) -> None:
        from lib.lake import write_json_atomic
        write_json_atomic(path, json.loads(self.to_json()))

    @classmethod
    def load(cls, path: str) -> "Preprocessor":
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def _as_dict(a) -> dict:
    """Spark map values arrive in pandas as a dict or as a list of (key, value) pairs."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return {}
    return a if isinstance(a, dict) else dict(a)
