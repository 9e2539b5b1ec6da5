"""Raw profile values -> clean feature values. Plain Python: the one parser used to fit, to
transform in bulk (inside Spark tasks) and to transform one new profile.

``parse_profile`` turns one input row (a dict: profile columns plus the user's music as
``genres`` and ``artists`` lists, one entry per music row) into a ``Parsed`` record:

- ``cats``: one value (or None) per single-valued categorical field
- ``lists``: sorted values per multi-valued field (interests, genres, languages, pets, artists, city, job)
- ``nums``: model-ready numbers (clipped, log where said) or None
- ``flags``: 0/1 indicators
- ``clipped``: names of the range rules that fired (counted in the feature report)

Names, photos and bios are never read here. Sensitive attributes (ethnicity, race) and
quasi-identifiers (zip code, home town) are dropped on purpose: they never become features.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lib.errors import UserError

_NaT, _NA = pd.NaT, pd.NA

# Profile columns the features read. Required ones must exist as columns (values may be null);
# optional ones count as missing when absent.
REQUIRED_COLUMNS = ("id", "gender", "sexual_orientation", "age", "created_at")
OPTIONAL_COLUMNS = ("relationship_goal", "drinking_habits", "smoking_habits", "education_level", "location",
                    "region", "job_title", "group_id", "interests", "height", "attributes", "latitude",
                    "longitude", "genres", "artists")
# Columns a profile row carries that are not features, known and quietly not read.
NOT_FEATURES = ("name", "avatar_url", "bio", "updated_at", "setup_complete", "looking_for", "source",
                "deleted_at", "banned", "ingest_run_id", "content_hash", "run_id", "birth_date",
                # Match settings: filters applied by match, not something to learn from.
                "age_min", "age_max", "max_distance_km")

# Extra attributes (``attributes`` map) with a parser; others are warned about and ignored.
KNOWN_ATTRIBUTES = ("speaks", "religion", "offspring", "pets", "sign", "diet", "body_type", "drugs", "status",
                    "income", "artists", "friends")
# Never features: protected characteristics and quasi-identifiers (zip code, home town);
# Speed Dating's raw activity ratings (i_*) are already summarised in ``interests``.
DROPPED_ATTRIBUTES = ("ethnicity", "race", "zipcode", "from")
DROPPED_ATTRIBUTE_PREFIXES = ("i_",)

ONE_HOT = ("gender", "sexual_orientation", "relationship_goal", "drinking_habits", "smoking_habits",
           "education_level", "education_status", "region", "group_id", "age_bin", "signup_weekday",
           "dominant_genre", "body_type", "diet", "diet_strictness", "drugs", "religion", "religion_seriousness",
           "sign", "sign_attitude", "has_kids", "wants_kids", "status")
# Multi-valued: multi-hot while the fitted vocabulary is small, embedding-bag ids past
# ``features.max_multi_hot`` values.
MULTI_VALUED = ("interests", "genres", "languages", "pets")
# Large vocabularies: always embedding-bag ids (fitted vocabulary + hashed buckets).
BAGS = ("city", "job_title", "artists")
LIST_FIELDS = MULTI_VALUED + BAGS
NUMERIC = ("age", "height", "tenure_days", "genre_count", "genre_entropy", "income", "friend_count",
           "artist_count")
FLAGS = ("new_user",)

# Plausible ranges; a value outside is clipped under the named rule.
RANGES = {"age": (18.0, 100.0, "age_out_of_range"), "height": (120.0, 230.0, "height_out_of_range")}
AGE_BINS = ((18, "18-24"), (25, "25-29"), (30, "30-34"), (35, "35-39"), (40, "40-44"), (45, "45-54"),
            (55, "55+"))
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass
class Parsed:
    id: str | None
    cats: dict = field(default_factory=dict)
    lists: dict = field(default_factory=dict)
    nums: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    clipped: list = field(default_factory=list)
    latitude: float | None = None
    longitude: float | None = None


# --- values -------------------------------------------------------------------------
def missing(v) -> bool:
    """None, NaN, pandas' NaT and NA (what Arrow hands over for a null)."""
    if v is None:
        return True
    if isinstance(v, float):
        return v != v
    return v is _NaT or v is _NA


def text(v) -> str | None:
    """Lower-case, HTML entities decoded, curly quotes made straight, spaces collapsed."""
    if missing(v):
        return None
    s = str(v)
    if "&" in s:
        s = html.unescape(s)
    s = s.translate(_QUOTES)
    s = " ".join(s.lower().split())
    return s or None


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def number(v) -> float | None:
    """A finite float, or None (missing, unparsable, inf). Text may use thousands commas."""
    if missing(v) or isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.replace(",", "").replace("$", "").strip()
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def as_list(v) -> list:
    """Arrays arrive as lists, tuples or numpy arrays (from Arrow); a missing one is empty and
    a single value (a string, a number) is a list of one."""
    if isinstance(v, (str, bytes, int, float, dict)):
        return [] if missing(v) else [v]
    if missing(v):
        return []
    try:
        return list(v)
    except TypeError:
        return [v]


def as_dict(v) -> dict:
    """Maps arrive as dicts or as lists of (key, value) pairs (from Arrow)."""
    if missing(v):
        return {}
    if isinstance(v, dict):
        return v
    try:
        return dict(v)
    except (TypeError, ValueError):
        raise UserError(f"attributes must be a mapping of name to value, got {type(v).__name__} {str(v)[:40]!r}") \
            from None


def as_datetime(v) -> dt.datetime | None:
    """A naive UTC datetime from a datetime, date, pandas Timestamp, numpy datetime64 or
    ISO-8601 text; anything else (numbers, unreadable text) is missing."""
    if missing(v):
        return None
    if isinstance(v, np.datetime64):
        if np.isnat(v):
            return None
        v = pd.Timestamp(v)
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if hasattr(v, "to_pydatetime"):
        v = v.to_pydatetime()
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        return None
    if v.tzinfo is not None:
        v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return v


# --- messy phrases (OkCupid) ----------------------------------------------------------
_LEVEL = re.compile(r"\s*\([^)]*\)\s*$")
_MODIFIER = re.compile(r"^(.*?)\s+(?:and|but)\s+(.*)$")
_EDUCATION = re.compile(r"^(graduated from|working on|dropped out of)\s+(.*)$")
_DIET = re.compile(r"^(mostly|strictly)\s+(.*)$")


def languages(s: str | None) -> list[str]:
    """"english (fluently), spanish (poorly)" -> ["english", "spanish"]."""
    if s is None:
        return []
    return sorted({p for p in (_LEVEL.sub("", part).strip() for part in s.split(",")) if p})


def with_modifier(s: str | None) -> tuple[str | None, str | None]:
    """"agnosticism and very serious about it" -> ("agnosticism", "very serious");
    "virgo but it doesn't matter" -> ("virgo", "it doesn't matter")."""
    if s is None:
        return None, None
    m = _MODIFIER.match(s)
    if not m:
        return s, None
    mod = m.group(2)
    return m.group(1), (mod[:-len(" about it")] if mod.endswith(" about it") else mod)


def offspring(s: str | None) -> tuple[str | None, str | None]:
    """(has kids: has|none, wants kids: yes|maybe|no) from "doesn't have kids, but might want them"."""
    if s is None:
        return None, None
    has = "has" if re.search(r"\bhas (kids|a kid)\b", s) else ("none" if "doesn't have kids" in s else None)
    if "doesn't want" in s:
        wants = "no"
    elif "might want" in s:
        wants = "maybe"
    elif re.search(r"\bwants?\b", s):
        wants = "yes"
    else:
        wants = None
    return has, wants


def pets(s: str | None) -> list[str]:
    """"likes dogs and has cats" -> ["has cats", "likes dogs"]."""
    if s is None:
        return []
    return sorted({p.strip() for p in s.split(" and ") if p.strip()})


def education(s: str | None) -> tuple[str | None, str | None]:
    """"working on masters program" -> ("masters program", "working on")."""
    if s is None:
        return None, None
    m = _EDUCATION.match(s)
    return (m.group(2), m.group(1)) if m else (s, None)


def diet(s: str | None) -> tuple[str | None, str | None]:
    """"mostly vegetarian" -> ("vegetarian", "mostly")."""
    if s is None:
        return None, None
    m = _DIET.match(s)
    return (m.group(2), m.group(1)) if m else (s, None)


# --- music ------------------------------------------------------------------------------
def music_stats(genres: list) -> tuple[int | None, float | None, str | None]:
    """(distinct genres, entropy in nats of the genre shares, most frequent genre (ties: first
    by name)) of one user's music rows; all None without music."""
    counts = Counter(g for g in (text(x) for x in genres) if g)
    if not counts:
        return None, None, None
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    dominant = min(counts, key=lambda g: (-counts[g], g))
    return len(counts), entropy, dominant


def by_count(values: list) -> list[str]:
    """Distinct values, most frequent first, ties by value (what an embedding bag keeps first)."""
    counts = Counter(v for v in (text(x) for x in values) if v)
    return sorted(counts, key=lambda v: (-counts[v], v))


# --- one profile --------------------------------------------------------------------------
def age_bin(age: float | None) -> str | None:
    if age is None:
        return None
    label = None
    for lo, name in AGE_BINS:
        if age >= lo:
            label = name
    return label


def _clip(name: str, x: float | None, clipped: list) -> float | None:
    lo, hi, rule = RANGES[name]
    if x is not None and not lo <= x <= hi:
        clipped.append(rule)
        return min(max(x, lo), hi)
    return x


def _log1p(x: float | None) -> float | None:
    return None if x is None else math.log1p(max(x, 0.0))


def parse_profile(row: dict, as_of: dt.datetime, new_user_days: int) -> Parsed:
    """One input row -> ``Parsed``. ``as_of`` (naive UTC) is the moment tenure is measured at."""
    out = Parsed(id=None if missing(row.get("id")) else str(row.get("id")))
    attrs = {str(k).lower(): v for k, v in as_dict(row.get("attributes")).items()}
    cats, lists, nums, clipped = out.cats, out.lists, out.nums, out.clipped

    for f in ("gender", "sexual_orientation", "relationship_goal", "drinking_habits", "smoking_habits",
              "region", "group_id"):
        cats[f] = text(row.get(f))
    cats["education_level"], cats["education_status"] = education(text(row.get("education_level")))
    age = _clip("age", number(row.get("age")), clipped)
    cats["age_bin"] = age_bin(age)
    nums["age"] = age
    nums["height"] = _clip("height", number(row.get("height")), clipped)

    created = as_datetime(row.get("created_at"))
    if created is None:
        nums["tenure_days"], cats["signup_weekday"], out.flags["new_user"] = None, None, 0
    else:
        days = (as_of - created).total_seconds() / 86400.0
        if days < 0:
            clipped.append("created_at_in_future")
            days = 0.0
        nums["tenure_days"] = math.log1p(days)
        out.flags["new_user"] = int(days < new_user_days)
        cats["signup_weekday"] = WEEKDAYS[created.weekday()]

    genres = as_list(row.get("genres"))
    nums["genre_count"], nums["genre_entropy"], cats["dominant_genre"] = music_stats(genres)
    lists["genres"] = sorted({g for g in (text(x) for x in genres) if g})
    lists["artists"] = by_count(as_list(row.get("artists")))
    lists["interests"] = sorted({v for v in (text(x) for x in as_list(row.get("interests"))) if v})
    city, job = text(row.get("location")), text(row.get("job_title"))
    lists["city"] = [city] if city else []
    lists["job_title"] = [job] if job else []

    # Extra attributes (OkCupid's phrases, Last.fm's counts).
    lists["languages"] = languages(text(attrs.get("speaks")))
    lists["pets"] = pets(text(attrs.get("pets")))
    cats["religion"], cats["religion_seriousness"] = with_modifier(text(attrs.get("religion")))
    cats["sign"], cats["sign_attitude"] = with_modifier(text(attrs.get("sign")))
    cats["has_kids"], cats["wants_kids"] = offspring(text(attrs.get("offspring")))
    cats["diet"], cats["diet_strictness"] = diet(text(attrs.get("diet")))
    for f in ("body_type", "drugs", "status"):
        cats[f] = text(attrs.get(f))
    income = number(attrs.get("income"))
    nums["income"] = _log1p(income) if income is not None and income > 0 else None  # OkCupid: -1 = not said
    nums["friend_count"] = _log1p(number(attrs.get("friends")))
    nums["artist_count"] = _log1p(number(attrs.get("artists")))

    lat, lon = number(row.get("latitude")), number(row.get("longitude"))
    if (lat is not None or lon is not None) and not (lat is not None and lon is not None
                                                     and -90 <= lat <= 90 and -180 <= lon <= 180):
        clipped.append("coordinates_out_of_range")
        lat = lon = None
    out.latitude, out.longitude = lat, lon
    return out


def unknown_columns(columns) -> list[str]:
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) | set(NOT_FEATURES)
    return sorted(str(c) for c in columns if c not in known and not str(c).startswith("_"))


def missing_columns(columns) -> list[str]:
    return [c for c in REQUIRED_COLUMNS if c not in set(columns)]


def unknown_attribute(key: str) -> bool:
    k = str(key).lower()
    return not (k in KNOWN_ATTRIBUTES or k in DROPPED_ATTRIBUTES or k.startswith(DROPPED_ATTRIBUTE_PREFIXES))
