"""The fitted preprocessor: plain Python and numpy, no Spark needed to transform.

The same object transforms training data and bulk inference (inside ``mapInPandas`` on the
executors, see ``lib.features.job.transform``) and a single new profile (``transform_one``).
Both towers read its output, so the user and the profile side see the same kinds of features.

Output per profile:

- ``dense`` [dense_dim] float32, in order (names: ``feature_names``):
  one-hot per categorical [missing, other, v1..vN]; multi-hot per small multi-valued field
  [missing, other, v1..vN]; a missing indicator per embedding-bag field; per number its
  standardised value (imputed with the fitted mean, i.e. 0) and a missing indicator; flags.
- ``ids`` [id_slots] int32: per embedding-bag field ``length`` slots, 0 = empty, 1..V the
  fitted vocabulary, V+1..V+B hashed buckets for values never seen in fitting
  (bucket = crc32("field\\x1fvalue") mod B: the same in any process and language).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from lib.errors import UserError
from lib.features import parse

FORMAT = 2  # bump when the layout or the parsing changes meaning: older artifacts are refused
log = logging.getLogger(__name__)


@dataclass
class Preprocessor:
    version: str
    fitted_at: str  # naive UTC, ISO: the moment the fitting data's tenure was measured at
    new_user_days: int = 30
    one_hot: dict = field(default_factory=dict)  # field -> [values]
    multi_hot: dict = field(default_factory=dict)  # field -> [values]
    bags: dict = field(default_factory=dict)  # field -> {"vocab": [values], "buckets": B, "length": slots}
    numeric: dict = field(default_factory=dict)  # field -> [mean, std] of the fitting data
    flags: list = field(default_factory=lambda: list(parse.FLAGS))
    format: int = FORMAT

    def __post_init__(self):
        # The vector layout follows key order: canonical (sorted), so a preprocessor read back
        # from JSON lays out vectors exactly as the fitted one.
        for name in ("one_hot", "multi_hot", "bags", "numeric"):
            setattr(self, name, dict(sorted(getattr(self, name).items())))
        # Lookup tables (not fields: not saved, not compared).
        self._one_hot_index = {f: {v: i + 2 for i, v in enumerate(vocab)} for f, vocab in self.one_hot.items()}
        self._multi_index = {f: {v: i + 2 for i, v in enumerate(vocab)} for f, vocab in self.multi_hot.items()}
        self._bag_index = {f: {v: i + 1 for i, v in enumerate(b["vocab"])} for f, b in self.bags.items()}
        self._dense_dim = len(self.feature_names())

    # --- layout ---------------------------------------------------------------------
    @property
    def dense_dim(self) -> int:
        return self._dense_dim

    @property
    def id_slots(self) -> int:
        return sum(b["length"] for b in self.bags.values())

    def feature_names(self) -> list[str]:
        names = []
        for kind, table in (("cat", self.one_hot), ("multi", self.multi_hot)):
            for f, vocab in table.items():
                names += [f"{kind}:{f}=<missing>", f"{kind}:{f}=<other>"] + [f"{kind}:{f}={v}" for v in vocab]
        names += [f"bag:{f}=<missing>" for f in self.bags]
        for f in self.numeric:
            names += [f"num:{f}", f"num:{f}=<missing>"]
        return names + [f"flag:{f}" for f in self.flags]

    def bag_layout(self) -> list[dict]:
        """What a tower needs to build its embedding bags: slot range and id count per field."""
        out, start = [], 0
        for f, b in self.bags.items():
            out.append({"field": f, "start": start, "length": b["length"], "size": len(b["vocab"]) + b["buckets"] + 1})
            start += b["length"]
        return out

    def bag_id(self, f: str, value: str) -> int:
        b = self.bags[f]
        hit = self._bag_index[f].get(value)
        if hit is not None:
            return hit
        return len(b["vocab"]) + 1 + zlib.crc32(f"{f}\x1f{value}".encode("utf-8")) % b["buckets"]

    # --- transform ------------------------------------------------------------------
    def parse(self, row: dict, as_of: dt.datetime) -> parse.Parsed:
        return parse.parse_profile(row, as_of, self.new_user_days)

    def encode(self, parsed: list) -> tuple[np.ndarray, np.ndarray]:
        """(dense [n, dense_dim] float32, ids [n, id_slots] int32) for ``Parsed`` records."""
        n = len(parsed)
        dense = np.zeros((n, self.dense_dim), dtype=np.float32)
        ids = np.zeros((n, self.id_slots), dtype=np.int32)
        for r, p in enumerate(parsed):
            col = 0
            for f, vocab in self.one_hot.items():
                v = p.cats.get(f)
                dense[r, col + (0 if v is None else self._one_hot_index[f].get(v, 1))] = 1.0
                col += len(vocab) + 2
            for f, vocab in self.multi_hot.items():
                values = p.lists.get(f) or ()
                if not values:
                    dense[r, col] = 1.0
                index = self._multi_index[f]
                for v in values:
                    dense[r, col + index.get(v, 1)] = 1.0
                col += len(vocab) + 2
            slot = 0
            for f, b in self.bags.items():
                values = p.lists.get(f) or ()
                if not values:
                    dense[r, col] = 1.0
                for j, v in enumerate(values[:b["length"]]):
                    ids[r, slot + j] = self.bag_id(f, v)
                col += 1
                slot += b["length"]
            for f, (mean, std) in self.numeric.items():
                x = p.nums.get(f)
                if x is None:
                    dense[r, col + 1] = 1.0  # imputed: the fitted mean, standardised 0
                else:
                    dense[r, col] = (x - mean) / std
                col += 2
            for f in self.flags:
                dense[r, col] = float(p.flags.get(f, 0))
                col += 1
        return dense, ids

    def transform(self, rows, as_of: dt.datetime) -> tuple[list, np.ndarray, np.ndarray]:
        """(parsed records, dense, ids) for input rows (dicts, or a pandas DataFrame)."""
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict("records")
        as_of = parse.as_datetime(as_of)
        parsed = [self.parse(r, as_of) for r in rows]
        dense, ids = self.encode(parsed)
        return parsed, dense, ids

    def transform_one(self, profile: dict, music: list | None = None,
                      as_of: dt.datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dense, ids) for one profile (a dict of profile columns, a new user: no Spark).

        ``music``: the user's music preference rows as dicts with ``genre`` and ``artist_name``
        (or give ``genres`` / ``artists`` lists in ``profile``). ``as_of``: when tenure is
        measured, default now (UTC). Unknown keys are ignored with a warning; a required key
        missing is a ``UserError`` naming it.
        """
        if not isinstance(profile, Mapping):
            raise UserError(f"a profile must be a mapping of column to value, got {type(profile).__name__}")
        check_columns(profile.keys(), "profile")
        unknown = sorted(str(k) for k in parse.as_dict(profile.get("attributes")) if parse.unknown_attribute(k))
        if unknown:
            log.warning("profile: ignoring extra attribute(s) the features do not read: %s", ", ".join(unknown))
        row = dict(profile)
        if music is not None:
            row["genres"], row["artists"] = _music_lists(music)
        when = dt.datetime.now(dt.timezone.utc) if as_of is None else parse.as_datetime(as_of)
        if when is None:
            raise UserError(f"as_of must be a date and time (datetime or ISO-8601 text), got {as_of!r:.60}")
        _, dense, ids = self.transform([row], when)
        return dense[0], ids[0]

    # --- persistence ----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "text") -> "Preprocessor":
        try:
            data = json.loads(text)
        except ValueError:
            raise UserError(f"{where} is not a preprocessor (not JSON); give the preprocessor.json of a "
                            "features run or a model") from None
        if not isinstance(data, dict) or "version" not in data or not ({"one_hot", "categorical"} & set(data)):
            raise UserError(f"{where} is not a preprocessor; give the preprocessor.json of a features run or a model")
        data.setdefault("format", 1)  # the first preprocessor had no format field
        if data["format"] != FORMAT:
            raise UserError(f"preprocessor {data.get('version')!r} has format {data['format']}, this code reads "
                            f"format {FORMAT}; run 'features' (and 'train') again to fit a new one")
        try:
            return cls(**data)
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise UserError(f"{where} is a damaged preprocessor ({type(e).__name__}: {e}); run 'features' again") \
                from None

    def save(self, path: str) -> None:
        from lib.lake import write_json_atomic
        write_json_atomic(path, json.loads(self.to_json()))

    @classmethod
    def load(cls, path: str) -> "Preprocessor":
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise UserError(f"no preprocessor at {path}; run 'features' first") from None
        except (IsADirectoryError, UnicodeDecodeError):
            raise UserError(f"{path} is not a preprocessor file; give the path of a preprocessor.json") from None
        return cls.from_json(text, path)


def _music_lists(music) -> tuple[list, list]:
    """(genres, artists) from music rows: dicts (or a DataFrame) with ``genre`` and ``artist_name``."""
    if hasattr(music, "to_dict"):
        music = music.to_dict("records")
    if isinstance(music, (str, bytes, Mapping)) or not hasattr(music, "__iter__"):
        raise UserError(f"music must be a list of rows with 'genre' and 'artist_name', got {type(music).__name__}")
    rows = list(music)
    for m in rows:
        if not isinstance(m, Mapping) or not {"genre", "artist_name"} & set(m):
            raise UserError(f"music must be a list of rows with 'genre' and 'artist_name', got an element {m!r:.60}")
    return [m.get("genre") for m in rows], [m.get("artist_name") for m in rows]


def check_columns(columns, what: str) -> None:
    """Fail naming a required column that is absent; warn once about columns not read."""
    columns = list(columns)
    absent = parse.missing_columns(columns)
    if absent:
        raise UserError(f"{what} has no column {', '.join(repr(c) for c in absent)}, which the features need "
                        f"(a null value is fine, the column must be there)")
    unknown = parse.unknown_columns(columns)
    if unknown:
        log.warning("%s: ignoring column(s) the features do not read: %s", what, ", ".join(unknown))
