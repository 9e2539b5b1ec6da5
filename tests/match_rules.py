"""The match settings rules written out plainly for the tests (not the code under test):
each side within the other's age range, and the distance within the smaller limit, where
set; an unknown age or position fails a setting that is set."""
import math


def _unset(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def km(a, b) -> float:
    """Great-circle distance by the spherical law of cosines (the code: the angle between unit vectors, the haversine near a limit)."""
    la1, lo1, la2, lo2 = map(math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"]))
    c = math.sin(la1) * math.sin(la2) + math.cos(la1) * math.cos(la2) * math.cos(lo2 - lo1)
    return 6371.0088 * math.acos(max(-1.0, min(1.0, c)))


def _in_range(age, lo, hi) -> bool:
    if not _unset(lo) and (_unset(age) or age < lo):
        return False
    return _unset(hi) or (not _unset(age) and age <= hi)


def allowed(u, p) -> bool:
    if not _in_range(p["age"], u["age_min"], u["age_max"]) or not _in_range(u["age"], p["age_min"], p["age_max"]):
        return False
    limits = [x for x in (u["max_distance_km"], p["max_distance_km"]) if not _unset(x)]
    if not limits:
        return True
    if any(_unset(v) for v in (u["latitude"], u["longitude"], p["latitude"], p["longitude"])):
        return False
    return km(u, p) <= min(limits)
