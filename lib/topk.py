"""Top-K matches of a block of users over the shards they may search: plain numpy and FAISS.

The search over-fetches, filters, merges the shards and, where the filters leave a user
short or unsure, searches again deeper:

1. each shard gives its best ``fetch`` for every user (``fetch`` = the pool wanted + 1 for
   oneself + the most exclusions any user of the block has; with the settings on,
   ``OWN_SETTINGS_DEPTH`` times that for users who set an age range or distance);
2. the filters remove oneself, the excluded (acted on, blocked either way) and, with
   ``settings``, anyone outside the user's age range or maximum distance or whose own
   settings leave the user out;
3. a user is done when K candidates pass and the K-th scores higher than anything a
   shard has not returned yet (the lowest score it did return), or when every shard was
   seen whole. On flat shards the result is then exactly the filtered top-K of one index
   over all the shards' vectors;
4. users not done are searched again, deeper: as deep as the share of their candidates
   that passed says K should pass, with a margin (users with the same depth searched
   together). Past ``MAX_FETCH`` (or when an approximate index has nothing more to give,
   or none of a user's candidates passed), every slot is scored exactly from the stored
   vectors and the best are taken in the same rounds, so nobody is left short while
   people who fit remain.

Scorers: ``two_tower`` (the embeddings), ``popularity`` (score: minus the rank by
popularity, then id) and ``random`` (the baselines of ``evaluate``), all under the same
filters.

With ``reciprocal``, the user's best ``pool`` (by the user's own score) are reranked by
the harmonic mean of both directions, each cosine mapped to [0, 1] by (1 + cos) / 2:
the user's score for the profile and the profile's (user tower) score for the user.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from lib.shard_store import ATTRIBUTES

MAX_FETCH = 4096  # deeper than this per shard: score the shard's vectors exhaustively
# With the settings on, users who set a range or distance start this many times deeper (on
# synthetic data about half their best candidates pass: measured, the job then takes 1.4x
# its time without settings instead of 1.7x with everyone starting at the base depth).
OWN_SETTINGS_DEPTH = 3
EXHAUSTIVE_CELLS = 1 << 23  # [users x slots] scored at once by the exhaustive search (32 MB of float32)
EARTH_RADIUS_KM = 6371.0088


@dataclass
class ShardSet:
    """The shards one group of users searches, as one candidate space: slot j is row
    ``j - starts[s]`` of shard ``s``."""
    shards: list
    starts: np.ndarray  # [S+1] first slot of each shard (and the total)
    gpos: np.ndarray  # [m] int64 global position of each slot (unique over the whole index)
    ids: np.ndarray  # [m] object profile ids
    popularity: np.ndarray  # [m] int64
    attrs: dict  # name -> [m] float64
    id_rank: np.ndarray  # [m] int64: position of the slot's id in sorted order (ties go to the smaller id)
    pop_score: np.ndarray  # [m] float32: the popularity baseline's score, minus the rank by (popularity, id)
    pop_order: list  # per shard: its rows best first by pop_score
    any_age_range: bool  # someone in the set has an age range
    any_max_distance: bool  # someone in the set has a maximum distance
    xyz: np.ndarray  # [3, m] float64 the slot's place on the unit sphere (NaN: unknown)
    cos_limit: np.ndarray  # [m] float64 ``cos_limit`` of the slot's maximum distance (NaN: none)

    @property
    def ids_arrow(self):
        """The profile ids as an Arrow array (taken by slot for the output, no Python strings)."""
        if getattr(self, "_ids_arrow", None) is None:
            import pyarrow as pa
            self._ids_arrow = pa.array(self.ids, pa.string())
        return self._ids_arrow

    @property
    def total(self) -> int:
        return int(self.starts[-1])


def shard_set(shards: list, global_offsets: list) -> ShardSet:
    """``global_offsets[i]``: the first global position of shard i (its manifest offset)."""
    counts = [s.count for s in shards]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cat = (lambda arrays, dtype: np.concatenate(arrays) if arrays else np.zeros(0, dtype))
    ids = cat([s.ids for s in shards], object)
    id_rank = np.empty(len(ids), np.int64)
    id_rank[np.argsort(ids.astype(str), kind="stable")] = np.arange(len(ids))
    popularity = cat([s.popularity for s in shards], np.int64)
    # The popularity baseline ranks by (popularity, id): a score without ties, so merging
    # shards by score is exact.
    pop_score = np.empty(len(ids), np.float32)
    pop_score[np.lexsort((id_rank, -popularity))] = -np.arange(len(ids), dtype=np.float32)
    attrs = {a: cat([s.attrs[a] for s in shards], np.float64) for a in ATTRIBUTES}
    pop_order = [np.argsort(-pop_score[starts[i]:starts[i + 1]], kind="stable") for i in range(len(shards))]
    return ShardSet(
        shards=shards, starts=starts,
        gpos=cat([off + np.arange(s.count, dtype=np.int64) for s, off in zip(shards, global_offsets)], np.int64),
        ids=ids, popularity=popularity,
        attrs=attrs, id_rank=id_rank, pop_score=pop_score, pop_order=pop_order,
        any_age_range=bool(np.isfinite(attrs["age_min"]).any() or np.isfinite(attrs["age_max"]).any()),
        any_max_distance=bool(np.isfinite(attrs["max_distance_km"]).any()),
        xyz=unit_xyz(attrs["latitude"], attrs["longitude"]).reshape(3, -1),
        cos_limit=cos_limit(attrs["max_distance_km"]))


@dataclass
class Users:
    ids: np.ndarray  # [n] object
    queries: np.ndarray  # [n, d] float32 user-tower embeddings
    gpos: np.ndarray  # [n] int64: the user's own global position in the index, -1 if not indexed
    excluded: list  # [n] int64 arrays: global positions never to return
    attrs: dict  # name -> [n] float64 (ATTRIBUTES; NaN: not set)
    profile_vectors: np.ndarray | None = None  # [n, d] the user's own profile embedding (reciprocal); NaN rows: none


def user_seed(seed: int, user_id: str, round_no: int = 0) -> list:
    return [seed, round_no, int.from_bytes(hashlib.blake2b(str(user_id).encode(), digest_size=8).digest(), "little")]


# --- filters --------------------------------------------------------------------------
def _within(x, lo, hi):
    """x in [lo, hi]; a bound not set (NaN) passes; an unknown x fails a bound that is set."""
    return (np.isnan(lo) | (x >= lo)) & (np.isnan(hi) | (x <= hi))


def haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlon = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def passes(users: Users, rows: np.ndarray, slots: np.ndarray, sset: ShardSet, settings: bool) -> np.ndarray:
    """[n, m] bool: candidate ``slots[i, j]`` (-1: none) may be shown to user ``rows[i]``."""
    valid = slots >= 0
    s = np.where(valid, slots, 0)
    g = sset.gpos[s]
    ok = valid & (g != users.gpos[rows][:, None])
    lens = np.array([len(users.excluded[r]) for r in rows], dtype=np.int64)
    if lens.sum():
        excl = np.concatenate([users.excluded[r] for r in rows]).astype(np.int64)
        # (row, global position) as one int: row * width + gpos, unique while gpos < width.
        width = np.int64(max(int(sset.gpos.max(initial=0)), int(excl.max())) + 1)
        banned = np.sort(np.repeat(np.arange(len(rows), dtype=np.int64), lens) * width + excl)
        codes = np.arange(len(rows), dtype=np.int64)[:, None] * width + g
        at = np.minimum(np.searchsorted(banned, codes), len(banned) - 1)
        ok &= banned[at] != codes
    if not settings:
        return ok
    ua = {a: users.attrs[a][rows][:, None] for a in ATTRIBUTES}
    # Each check only where someone on either side set something: most people set nothing.
    if sset.any_age_range or np.isfinite(ua["age_min"]).any() or np.isfinite(ua["age_max"]).any():
        ok &= _within(sset.attrs["age"][s], ua["age_min"], ua["age_max"])  # they are in the user's range ...
        ok &= _within(ua["age"], sset.attrs["age_min"][s], sset.attrs["age_max"][s])  # ... and the user in theirs
    if sset.any_max_distance or np.isfinite(ua["max_distance_km"]).any():
        ok &= _near(users, rows, s, sset)
    return ok


def unit_xyz(lat, lon) -> np.ndarray:
    """[3, ...] points on the unit sphere (NaN where a coordinate is unknown)."""
    p, l = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(p) * np.cos(l), np.cos(p) * np.sin(l), np.sin(p)])


def cos_limit(km) -> np.ndarray:
    """The cosine of the angle a distance limit allows (NaN: no limit); cosines above it are nearer."""
    return np.cos(np.minimum(np.asarray(km, dtype=np.float64) / EARTH_RADIUS_KM, np.pi))


def _near(users: Users, rows, s, sset: ShardSet) -> np.ndarray:
    """[n, m] bool: user ``rows[i]`` and slot ``s[i, j]`` are within the nearer of their
    distance limits, or neither set one (unknown coordinates fail a limit). The cosine of the
    angle between the two unit vectors (3 multiply-adds) against the limit's decides; only
    pairs within float error of the limit get the haversine, so the answer is the haversine's."""
    lat, lon = users.attrs["latitude"][rows], users.attrs["longitude"][rows]
    u = unit_xyz(lat, lon)
    cos = u[0][:, None] * sset.xyz[0][s] + u[1][:, None] * sset.xyz[1][s] + u[2][:, None] * sset.xyz[2][s]
    # The nearer limit has the larger cosine; fmax ignores a side without one.
    bound = np.fmax(cos_limit(users.attrs["max_distance_km"][rows])[:, None], sset.cos_limit[s])
    with np.errstate(invalid="ignore"):
        near = np.isnan(bound) | (cos >= bound)
        unsure = np.abs(cos - bound) <= 1e-9
    if unsure.any():
        i, j = np.nonzero(unsure)
        limit = np.fmin(users.attrs["max_distance_km"][rows][i], sset.attrs["max_distance_km"][s[i, j]])
        d = haversine_km(lat[i], lon[i], sset.attrs["latitude"][s[i, j]], sset.attrs["longitude"][s[i, j]])
        near[i, j] = d <= limit
    return near


# --- candidates -----------------------------------------------------------------------
def _search(users: Users, rows, sset: ShardSet, fetch: int, scorer: str, seed: int, round_no: int):
    """(scores [n, m], slots [n, m] (-1: none), frontier [n], complete [n], index_dry [n]):
    per shard its best ``fetch``; frontier: the highest score any incomplete shard may still
    hold for the user; complete: every shard was seen whole; index_dry: an approximate
    index had no more to give (its search returned fewer than asked)."""
    n = len(rows)
    frontier = np.full(n, -np.inf)
    complete = np.ones(n, dtype=bool)
    dry = np.zeros(n, dtype=bool)
    if scorer == "random":
        return _random_sample(users, rows, sset, fetch, seed, round_no)
    all_scores, all_slots = [], []
    for si, shard in enumerate(sset.shards):
        kf = min(fetch, shard.count)
        if kf == 0:
            continue
        start = sset.starts[si]
        if scorer == "two_tower":
            d, i = shard.index.search(np.ascontiguousarray(users.queries[rows]), kf)
            missing = i < 0
            d = np.where(missing, -np.inf, d).astype(np.float32)
            slots = np.where(missing, -1, i + start)
            if shard.entry["type"] != "flat":
                short = missing.any(axis=1)  # the probed lists held fewer than asked: not seen whole
                dry |= short
                complete &= ~short
        elif scorer == "popularity":
            slots = np.broadcast_to(sset.pop_order[si][:kf] + start, (n, kf))
            d = sset.pop_score[slots]
        else:
            raise ValueError(f"unknown scorer {scorer!r}")
        if kf < shard.count:
            complete[:] = False
            last = d[:, -1].astype(np.float64)
            frontier = np.maximum(frontier, np.where(np.isfinite(last), last, -np.inf))
        all_scores.append(d)
        all_slots.append(slots)
    if not all_scores:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64), frontier, complete, dry
    return np.concatenate(all_scores, axis=1), np.concatenate(all_slots, axis=1), frontier, complete, dry


def _random_sample(users: Users, rows, sset: ShardSet, fetch: int, seed: int, round_no: int):
    """A uniform sample of ``fetch`` slots without replacement for each user, in random order
    (the order is the score): the random baseline under the same filters."""
    n, total = len(rows), sset.total
    take = min(fetch, total)
    scores = np.full((n, take), -np.inf, dtype=np.float32)
    slots = np.full((n, take), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        rng = np.random.default_rng(user_seed(seed, users.ids[r], round_no))
        slots[i] = rng.choice(total, size=take, replace=False)
        scores[i] = (take - np.arange(take)).astype(np.float32)
    return scores, slots, np.full(n, -np.inf), np.full(n, take >= total), np.zeros(n, dtype=bool)


def _exhaustive(users: Users, rows, sset: ShardSet, scorer: str, seed: int):
    """Every slot of every shard scored for each user in ``rows`` (the last resort)."""
    n, m = len(rows), sset.total
    if scorer == "random":
        scores, slots, *_ = _random_sample(users, rows, sset, m, seed, round_no=99)
        return scores, slots
    slots = np.broadcast_to(np.arange(m, dtype=np.int64), (n, m))
    if scorer == "popularity":
        return np.broadcast_to(sset.pop_score, (n, m)), slots
    q = users.queries[rows]
    scores = np.concatenate([q @ np.asarray(s.vectors).T for s in sset.shards], axis=1) if sset.shards \
        else np.zeros((n, 0), np.float32)
    return scores.astype(np.float32), slots


# --- the top-K ------------------------------------------------------------------------
def _best(scores, slots, ok, want: int, id_rank):
    """Per row, the passing candidates best first (at most ``want``; equal scores: the
    smaller id first): (slots, scores) lists."""
    masked = np.where(ok, scores, -np.inf)
    n, m = masked.shape
    width = min(want, m)
    if width == 0:
        return [np.zeros(0, np.int64)] * n, [np.zeros(0, np.float32)] * n
    if width < m:
        part = np.argpartition(-masked, width - 1, axis=1)[:, :width]
        kth = np.take_along_axis(masked, part, axis=1).min(axis=1)
        # A tie at the cut: argpartition kept an arbitrary few of the tied; those rows are
        # redone below over every candidate scoring at least the cut.
        redo = (masked >= kth[:, None]).sum(axis=1) > width
    else:
        part, redo = np.broadcast_to(np.arange(m), (n, m)), np.zeros(n, dtype=bool)
    top = np.take_along_axis(masked, part, axis=1)
    psl = np.take_along_axis(slots, part, axis=1)
    order = np.lexsort((id_rank[np.maximum(psl, 0)], -top), axis=1)
    psl, top = np.take_along_axis(psl, order, axis=1), np.take_along_axis(top, order, axis=1)
    out_slots, out_scores = [], []
    for i in range(n):
        if redo[i]:
            cand = np.flatnonzero(masked[i] >= kth[i])
            o = np.lexsort((id_rank[slots[i, cand]], -masked[i, cand]))[:width]
            row_slots, row_top = slots[i, cand[o]], masked[i, cand[o]]
        else:
            row_slots, row_top = psl[i], top[i]
        keep = np.isfinite(row_top)
        out_slots.append(row_slots[keep])
        out_scores.append(row_top[keep].astype(np.float32))
    return out_slots, out_scores


def topk(users: Users, sset: ShardSet, k: int, scorer: str = "two_tower", seed: int = 0, settings: bool = True,
         reciprocal: bool = False, pool: int = 0) -> tuple:
    """(user_rows, ranks, slots, scores) arrays: each user's best ``k`` passing candidates,
    ranks 1..k, best first. See the module docstring for the rounds and the guarantees."""
    n = len(users.ids)
    want = max(k, pool) if reciprocal else k
    most_excluded = max((len(e) for e in users.excluded), default=0)
    found_slots, found_scores = [None] * n, [None] * n
    first = want + 1 + most_excluded
    todo = {first: np.arange(n)}  # fetch per shard -> the rows searched that deep
    if settings:
        # Someone with an age range or a distance of their own loses many of their best
        # candidates to it: they start deeper rather than pay for a second full search.
        own = np.zeros(n, dtype=bool)
        for a in ("age_min", "age_max", "max_distance_km"):
            own |= np.isfinite(users.attrs[a])
        deep = int(_round_up(OWN_SETTINGS_DEPTH * first))
        todo = {f: r for f, r in ((first, np.flatnonzero(~own)), (deep, np.flatnonzero(own))) if len(r)}
    round_no = 0
    while todo and sset.total:
        deeper = {}
        for fetch, pending in sorted(todo.items()):
            for rows in _chunks(pending, fetch, sset):
                if fetch > MAX_FETCH:
                    scores, slots, frontier, complete, dry = _search_all(users, rows, sset, fetch, scorer, seed)
                else:
                    scores, slots, frontier, complete, dry = _search(users, rows, sset, fetch, scorer, seed, round_no)
                ok = passes(users, rows, slots, sset, settings)
                best_slots, best_scores = _best(scores, slots, ok, want, sset.id_rank)
                kth = np.array([b[want - 1] if len(b) >= want else -np.inf for b in best_scores])
                # Strictly above the frontier: an unseen candidate with an equal score could win a tie.
                enough = np.array([len(b) >= want for b in best_scores]) & (kth > frontier)
                done = enough | complete
                for j in np.flatnonzero(done):
                    found_slots[rows[j]], found_scores[rows[j]] = best_slots[j], best_scores[j]
                nxt = _next_fetch(fetch, ok.sum(axis=1), want, dry)
                for f in np.unique(nxt[~done]):
                    more = rows[~done & (nxt == f)]
                    deeper[int(f)] = np.concatenate([deeper[int(f)], more]) if int(f) in deeper else more
        todo = deeper
        round_no += 1
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    found = [(s, c) if s is not None else empty for s, c in zip(found_slots, found_scores)]
    if reciprocal:
        found = [_reciprocal(users, r, s, c, sset, k) for r, (s, c) in enumerate(found)]
    lens = np.array([min(len(s), k) for s, _ in found], dtype=np.int64)
    rows = np.repeat(np.arange(n), lens)
    ranks = np.concatenate([np.arange(1, m + 1) for m in lens]) if n else np.zeros(0, np.int64)
    slots = np.concatenate([s[:m] for (s, _), m in zip(found, lens)]) if n else np.zeros(0, np.int64)
    scores = np.concatenate([c[:m] for (_, c), m in zip(found, lens)]) if n else np.zeros(0, np.float32)
    return rows, ranks.astype(np.int32), slots.astype(np.int64), scores.astype(np.float32)


def _next_fetch(fetch: int, passed: np.ndarray, want: int, dry: np.ndarray) -> np.ndarray:
    """Per row, the fetch of its next round: deep enough that, at the pass rate the filters
    showed on this round's candidates, ``want`` should pass (with half again as margin), at
    least twice this one, rounded up (``_round_up``, so rows fall into few groups). Someone
    none of whose candidates passed, or whose approximate index ran dry, goes past
    MAX_FETCH: the exhaustive search."""
    need = np.where(passed >= want, 2.0 * fetch, np.ceil(1.5 * fetch * want / np.maximum(passed, 1)))
    nxt = _round_up(np.maximum(need, 2.0 * fetch))
    return np.where(dry | (passed == 0), np.maximum(nxt, 2 * MAX_FETCH), nxt)


def _round_up(x: np.ndarray) -> np.ndarray:
    """Up to the next of 2^e or 1.5 x 2^e: depths in few groups, at most a third too deep."""
    x = np.maximum(np.asarray(x, dtype=np.float64), 1.0)
    low = 2.0 ** np.floor(np.log2(x))
    return np.where(x <= low, low, np.where(x <= 1.5 * low, 1.5 * low, 2 * low)).astype(np.int64)


def _chunks(rows: np.ndarray, fetch: int, sset: ShardSet):
    """``rows`` in pieces whose [rows x candidates] matrices stay near ``EXHAUSTIVE_CELLS``
    (past MAX_FETCH every slot is scored; below it, one piece)."""
    if fetch <= MAX_FETCH:
        yield rows
        return
    step = max(1, EXHAUSTIVE_CELLS // max(sset.total, 1))
    for c in range(0, len(rows), step):
        yield rows[c:c + step]


def _search_all(users: Users, rows, sset: ShardSet, fetch: int, scorer: str, seed: int):
    """As ``_search``, from every slot scored exactly (past MAX_FETCH, or an approximate index
    that ran dry): the best ``fetch`` x shards overall, the frontier the best one left out."""
    scores, slots = _exhaustive(users, rows, sset, scorer, seed)
    n, m = scores.shape
    depth = min(m, fetch * max(len(sset.shards), 1))
    if depth >= m:
        return scores, slots, np.full(n, -np.inf), np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    part = np.argpartition(-scores, depth, axis=1)
    frontier = np.take_along_axis(scores, part[:, depth:depth + 1], axis=1)[:, 0].astype(np.float64)
    top = part[:, :depth]
    return (np.take_along_axis(scores, top, axis=1), np.take_along_axis(slots, top, axis=1), frontier,
            np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))


def _reciprocal(users: Users, r: int, slots, scores, sset: ShardSet, k: int):
    """Rerank one user's pool by the harmonic mean of both directions (see the docstring)."""
    if len(slots) == 0:
        return slots, scores
    mine = users.profile_vectors[r] if users.profile_vectors is not None else None
    if mine is None or not np.all(np.isfinite(mine)):
        return slots[:k], scores[:k]  # the user has no profile embedding: one direction only
    theirs = _user_vectors(sset, slots) @ mine
    a, b = (1.0 + scores) / 2.0, (1.0 + theirs) / 2.0
    hm = np.where(a + b > 0, 2 * a * b / np.maximum(a + b, 1e-12), 0.0)
    order = np.lexsort((sset.id_rank[slots], -hm))[:k]
    return slots[order], hm[order].astype(np.float32)


def _user_vectors(sset: ShardSet, slots: np.ndarray) -> np.ndarray:
    shard_of = np.searchsorted(sset.starts, slots, side="right") - 1
    out = np.empty((len(slots), sset.shards[0].vectors.shape[1]), np.float32)
    for si in np.unique(shard_of):
        sel = shard_of == si
        out[sel] = np.asarray(sset.shards[si].user_vectors)[slots[sel] - sset.starts[si]]
    return out
