"""A feature map phi whose dot product approximates the compatibility score: for retrieval only.

``dot(m.queries([u])[0], m.profiles([p])[0])`` is close to ``compatibility(u, p) + 2 * w.age``
(the constant makes the age block non-negative; it changes no ranking). Blocks, each a
slice of the ``[n, dim]`` float32 vector:

- ``group_id``, ``relationship_goal``, ``education_level``, ``drinking_habits``,
  ``smoking_habits``: sqrt(w) * one-hot of the value. Exact: equal values give w.
- ``interests``, ``genres``: sqrt(w) * multi-hot / sqrt(size of the set): the cosine of the
  two sets, which ranks like their Jaccard index (it is |A & B| / sqrt(|A| |B|) against
  |A & B| / |A | B|).
- ``attributes``: sqrt(w) * one-hot of each ``key=value`` / sqrt(number of keys): the share of
  equal values when both profiles have the same keys (OkCupid's, Speed Dating's).
- ``age``: sqrt(w * BIN / 10) * the share of each ``AGE_BIN``-year bin that the interval
  [age - 10, age + 10) covers. Two such intervals overlap by max(0, 20 - gap) years, so the
  dot is w * (2 - min(gap / 10, 2)) = the age term + 2w, up to how the bins cut the ends.
  The score does not penalise a missing age: one more column, sqrt(2w) for a profile
  without an age and for a query with one, gives such a pair the same 2w.

A value outside the vocabulary (the most frequent values of each field,
``lib.compatibility_search.fit_map``) and a missing value give zeros: no match, as in the
score. A negative weight flips its block on the query side only, so the dot product keeps
the weight's sign.

The exact score re-ranks whatever this map retrieves (``lib.compatibility_search``): the map
only has to put the best-scoring profiles among the first few hundred.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# (field, weight name): fields compared by equality, sets compared by overlap.
CATEGORICAL = (("group_id", "group"), ("relationship_goal", "goal"), ("education_level", "education"),
               ("drinking_habits", "drinking"), ("smoking_habits", "smoking"))
SETS = (("interests", "interests"), ("genres", "genres"))
VOCAB_FIELDS = tuple(f for f, _ in CATEGORICAL + SETS) + ("attributes",)
AGE_BIN = 2.0  # years per age bin; with integer ages the age block is exact but for a half bin
AGE_LOW, AGE_HIGH = 18, 100  # ages the validation lets through; others are clipped for the map
_AGE_EDGES = np.arange(AGE_LOW - 10, AGE_HIGH + 10 + AGE_BIN, AGE_BIN)  # bin i = [edge i, edge i+1)


def plain_pair_fields(row) -> dict:
    """A profile's pair fields as plain Python values (lists, dicts, None), from a dict or a
    pandas row of Spark's Arrow conversion (arrays as numpy arrays, maps as (key, value) lists)."""
    out = {}
    for f in ("group_id", "relationship_goal", "education_level", "drinking_habits", "smoking_habits"):
        v = row.get(f)
        out[f] = None if _missing(v) else v
    for f in ("interests", "genres"):
        v = row.get(f)
        out[f] = None if _missing(v) else [x for x in v if x is not None]
    age = row.get("age")
    out["age"] = None if _missing(age) else int(age)
    a = row.get("attributes")
    out["attributes"] = None if _missing(a) else (dict(a) if not isinstance(a, dict) else a)
    return out


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v))
    except TypeError:
        return False


def attribute_tokens(attributes) -> list:
    """``key=value`` tokens of an attributes map (the vocabulary of the attributes block)."""
    return [f"{k}={v}" for k, v in (attributes or {}).items() if v is not None]


@dataclass(frozen=True)
class CompatibilityMap:
    """phi for one set of weights and vocabularies. ``vocab``: field -> values (attributes:
    ``key=value`` tokens); ``weights``: the compatibility weights (``lib.compatibility``)."""
    vocab: dict
    weights: dict

    def _blocks(self) -> list:
        """[(name, weight name, width)] of the blocks with a non-zero weight, in vector order."""
        out = [(f, wn, len(self.vocab.get(f, ()))) for f, wn in CATEGORICAL + SETS]
        out.append(("attributes", "attributes", len(self.vocab.get("attributes", ()))))
        out.append(("age", "age", len(_AGE_EDGES)))  # the bins, then the missing-age column
        return [b for b in out if self.weights.get(b[1], 0.0) != 0.0 and b[2] > 0]

    @property
    def dim(self) -> int:
        return max(1, sum(width for _, _, width in self._blocks()))

    def profiles(self, rows: list) -> np.ndarray:
        """[len(rows), dim] float32: phi of each profile (dicts of ``plain_pair_fields``)."""
        return self._vectors(rows, query=False)

    def queries(self, rows: list) -> np.ndarray:
        """[len(rows), dim] float32: phi of each user as a query (negative weights flip here)."""
        return self._vectors(rows, query=True)

    def _vectors(self, rows: list, query: bool) -> np.ndarray:
        x = np.zeros((len(rows), self.dim), dtype=np.float32)
        start = 0
        for name, wn, width in self._blocks():
            scale = math.sqrt(abs(self.weights[wn]))
            block = x[:, start:start + width]
            if name == "age":
                self._age_block(rows, block, scale, query)
            else:
                index = {v: i for i, v in enumerate(self.vocab[name])}
                for r, row in enumerate(rows):
                    if name == "attributes":
                        values = attribute_tokens(row.get("attributes"))
                    elif name in ("interests", "genres"):
                        values = set(row.get(name) or ())
                    else:
                        v = row.get(name)
                        values = () if v is None else (v,)
                    if not values:
                        continue
                    # Sets: divided by the size of the whole set (values outside the vocabulary too).
                    value = scale / math.sqrt(len(values))
                    for v in values:
                        j = index.get(v)
                        if j is not None:
                            block[r, j] = value
            if query and self.weights[wn] < 0:
                block *= -1.0
            start += width
        return x

    @staticmethod
    def _age_block(rows: list, block: np.ndarray, scale: float, query: bool) -> None:
        ages = np.array([np.nan if row.get("age") is None else float(row["age"]) for row in rows])
        known = ~np.isnan(ages)
        a = np.clip(ages[known], AGE_LOW, AGE_HIGH)[:, None]
        lo, hi = _AGE_EDGES[None, :-1], _AGE_EDGES[None, 1:]
        covered = np.clip(np.minimum(hi, a + 10.0) - np.maximum(lo, a - 10.0), 0.0, AGE_BIN) / AGE_BIN
        block[known, :-1] = (math.sqrt(AGE_BIN / 10.0) * scale * covered).astype(np.float32)
        block[known if query else ~known, -1] = math.sqrt(2.0) * scale
