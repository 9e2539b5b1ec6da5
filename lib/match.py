"""match: bulk top-K for every active user, searched only in the shards of people who fit.

The hard filters are applied in two places. Mutual gender/orientation fit and "only
active, set-up profiles" are guaranteed by which shards a user searches (see lib.index).
Oneself, everyone the user acted on in training, blocks in either direction and (with
``match.settings_filters``) both sides' age ranges and maximum distances are applied to
the merged candidates, with over-fetch and deeper rounds so that K remain (lib.topk).

On the executors: each Python worker loads a shard once (cached) and searches blocks of
``match.query_batch`` users of one filter group; with ``match.partitions`` the users are
first range-partitioned by filter group, so that a worker needs only a few groups' shards.
Only counts reach the driver.

``recommend`` serves the two-tower model and the random and popularity baselines
(``scorer``) of ``evaluate`` alike.
"""
from __future__ import annotations

import os

import numpy as np

from lib import lake
from lib.config import Config
from lib.eligibility import active_profiles, excluded_pairs
from lib.errors import UserError
from lib.shard_store import ATTRIBUTES, load_shard
from lib.topk import Users, shard_set, topk

RECS_DDL = "user_id string, rank int, profile_id string, score float"
SCORERS = ("two_tower", "popularity", "random")


def shards_for(entries: list, gender, looking_for, gender_filter: bool) -> list:
    """Manifest entries a user may search: people of a gender the user seeks, who seek the user's."""
    if not gender_filter:
        return list(entries)
    wants = set(looking_for if looking_for is not None else ())
    return [e for e in entries if e["gender"] in wants and gender in e["seeks"]]


def group_key_col(gender_filter: bool):
    """Spark Column: users with the same key search the same shards."""
    from pyspark.sql import functions as F
    if not gender_filter:
        return F.lit("all")
    return F.concat_ws("#", F.coalesce("gender", F.lit("")), F.array_join(F.array_sort("looking_for"), "|"))


# --- the queries ----------------------------------------------------------------------
def index_positions(spark, index_dir: str, manifest: dict):
    """(profile_id, gpos): every indexed profile's global position (manifest offset + row)."""
    from pyspark.sql import functions as F
    offsets = F.create_map(*[F.lit(x) for e in manifest["shards"] for x in (e["shard"], e["offset"])])
    meta = spark.read.parquet(*[os.path.join(index_dir, e["meta_file"]) for e in manifest["shards"]])
    return meta.select("profile_id", (F.element_at(offsets, F.col("shard")) + F.col("row")).alias("gpos"))


def match_queries(spark, cfg: Config, model_version: str, index_dir: str, manifest: dict, reciprocal: bool = False):
    """Active users with their embedding, filter group, settings, own index position and the
    index positions they must never get (``excluded``); with ``reciprocal`` also their own
    profile embedding."""
    from pyspark.sql import functions as F
    from lib.index import settings_columns
    gf = manifest["gender_filter"]
    emb = (lake.read_table(spark, cfg.lake.path, "user_embeddings", "embed")
           .where(F.col("model_version") == model_version).select("user_id", "embedding"))
    profiles = lake.read_table(spark, cfg.lake.path, "profiles", "ingest")
    users = active_profiles(profiles).select(F.col("id").alias("user_id"), "gender", "looking_for",
                                             *settings_columns(profiles))
    pos = index_positions(spark, index_dir, manifest)
    # Repeats are dropped by collect_set as it aggregates (map side too), not by a distinct:
    # one shuffle of the interactions less (measured: half the time of this part).
    excluded = (excluded_pairs(lake.read_table(spark, cfg.lake.path, "interactions", "synthesize"), distinct=False)
                .join(pos, "profile_id").groupBy("user_id").agg(F.array_sort(F.collect_set("gpos")).alias("excluded")))
    q = (emb.join(users, "user_id").join(excluded, "user_id", "left")
         .join(pos.select(F.col("profile_id").alias("user_id"), F.col("gpos")), "user_id", "left")
         .withColumn("group_key", group_key_col(gf)))
    if reciprocal:
        mine = (lake.read_table(spark, cfg.lake.path, "profile_embeddings", "embed")
                .where(F.col("model_version") == model_version)
                .select(F.col("profile_id").alias("user_id"), F.col("embedding").alias("profile_embedding")))
        q = q.join(mine, "user_id", "left")
    return q


def excluded_lists(spark, cfg: Config):
    """(user_id, excluded): per user the profile ids never to recommend (``excluded_pairs``)."""
    from pyspark.sql import functions as F
    return (excluded_pairs(lake.read_table(spark, cfg.lake.path, "interactions", "synthesize"))
            .groupBy("user_id").agg(F.collect_set("profile_id").alias("excluded")))


# --- on the executors -----------------------------------------------------------------
_SHARDS: dict = {}  # (index_dir, file) -> Shard, loaded once per Python worker
_SETS: dict = {}  # (index_dir, files) -> ShardSet of a filter group


def _cached_set(index_dir: str, entries: list):
    if any(d != index_dir for d, _ in _SHARDS):
        _SHARDS.clear()  # a newer index: the old one's shards are not needed again
        _SETS.clear()
    key = (index_dir, tuple(e["file"] for e in entries))
    if key not in _SETS:
        for e in entries:
            if (index_dir, e["file"]) not in _SHARDS:
                _SHARDS[(index_dir, e["file"])] = load_shard(index_dir, e)
        _SETS[key] = shard_set([_SHARDS[(index_dir, e["file"])] for e in entries], [e["offset"] for e in entries])
    return _SETS[key]


def _floats(col) -> np.ndarray:
    """An Arrow numeric column as float64, NaN where null."""
    import pyarrow.compute as pc
    return pc.fill_null(col.cast("double"), float("nan")).to_numpy(zero_copy_only=False)


def _matrix(col, d: int) -> np.ndarray:
    """An Arrow list<float> column as [n, d] float32; null rows are NaN."""
    out = np.full((len(col), d), np.nan, np.float32)
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    out[valid] = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    return out


def _one_batch(parts: list):
    """Record batches of the same columns as one record batch."""
    import pyarrow as pa
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def _users(batch, reciprocal: bool) -> Users:
    """The Users of an Arrow record batch of ``match_queries`` rows (no Python object per value)."""
    import pyarrow.compute as pc
    emb = batch.column("embedding")
    d = len(emb[0])
    excl = batch.column("excluded")
    lens = pc.fill_null(pc.list_value_length(excl), 0).to_numpy(zero_copy_only=False)
    values = excl.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    return Users(
        ids=batch.column("user_id"), queries=np.ascontiguousarray(_matrix(emb, d)),
        gpos=pc.fill_null(batch.column("gpos"), -1).to_numpy(zero_copy_only=False).astype(np.int64),
        excluded=np.split(values, np.cumsum(lens)[:-1]) if len(lens) else [],
        attrs={a: _floats(batch.column(a)) for a in ATTRIBUTES},
        profile_vectors=_matrix(batch.column("profile_embedding"), d) if reciprocal else None)


def recommend(queries_df, index_dir: str, manifest: dict, k: int, scorer: str, seed: int, batch: int,
              settings: bool = True, reciprocal: bool = False, pool: int = 0, partitions: int = 0):
    """DataFrame of RECS_DDL rows: top-k per user of ``queries_df`` (see ``match_queries``).

    Arrow in and out (mapInArrow): ids stay Arrow strings, taken by position, so millions of
    result rows never become Python objects."""
    import pyarrow as pa
    entries, gf = manifest["shards"], manifest["gender_filter"]
    by_key = {}  # group key -> its manifest entries (a handful of keys: genders x genders sought)
    cols = ["user_id", "embedding", "gpos", "excluded", "group_key", *ATTRIBUTES,
            *(["profile_embedding"] if reciprocal else [])]

    def entries_for(key):
        if key not in by_key:
            gender, _, seeks = key.partition("#")
            by_key[key] = shards_for(entries, gender, seeks.split("|") if seeks else [], gf)
        return by_key[key]

    def search(key, grp):
        """Top-k rows of one filter group's users, in blocks of ``batch``."""
        sset = _cached_set(index_dir, entries_for(key))
        for start in range(0, grp.num_rows, batch):
            users = _users(grp.slice(start, batch), reciprocal)
            rows, ranks, slots, scores = topk(users, sset, k, scorer, seed, settings, reciprocal, pool)
            yield pa.RecordBatch.from_arrays(
                [users.ids.take(pa.array(rows)), pa.array(ranks, pa.int32()),
                 sset.ids_arrow.take(pa.array(slots)), pa.array(scores, pa.float32())],
                names=["user_id", "rank", "profile_id", "score"])

    def apply(batches):
        import faiss
        faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        # Users wait per filter group until a whole block of them is there: Spark's batches
        # mix the groups, and FAISS is fastest on large blocks.
        waiting = {}  # group key -> record batches of its users not searched yet
        for rb in batches:
            keys = np.asarray(rb.column("group_key").to_pylist(), dtype=object)
            for key in dict.fromkeys(keys):
                if not entries_for(key):
                    continue  # nobody could match these users
                parts = waiting.setdefault(key, [])
                parts.append(rb.take(pa.array(np.flatnonzero(keys == key))))
                held = sum(p.num_rows for p in parts)
                if held >= batch:
                    grp, full = _one_batch(parts), held // batch * batch
                    yield from search(key, grp.slice(0, full))
                    waiting[key] = [grp.slice(full)] if full < held else []
        for key, parts in waiting.items():
            if parts:
                yield from search(key, _one_batch(parts))

    qs = queries_df.select(*cols)
    if partitions:
        # By filter group, then user: a task meets few groups, so a Python worker loads only
        # their shards (for an index larger than a worker's memory), at the cost of a sampling
        # pass over the users and a shuffle of them.
        qs = qs.repartitionByRange(partitions, "group_key", "user_id").sortWithinPartitions("group_key", "user_id")
    # Otherwise as the joins that made them left them: every task meets every group, and each
    # Python worker loads each shard once (cached).
    return qs.mapInArrow(apply, RECS_DDL)


# --- the job ----------------------------------------------------------------------------
def load_index(spark, cfg: Config, model_version: str):
    """(index_dir, manifest) of the newest index built for ``model_version``, its files
    checked against the manifest's sha-256s here on the driver (before any task reads them)."""
    from lib.config import gender_filter_on
    from lib.shard_store import sha256_file, verify_files
    run = lake.latest_run(spark, cfg.lake.path, "index")
    _refuse_if_erased_since(spark, cfg, run)
    # From the lake path, not the absolute folder the run recorded: a moved lake still works.
    index_dir = lake.artifact_dir(cfg.lake.path, "indexes", run["run_id"])
    path = os.path.join(index_dir, "manifest.json")
    if not os.path.isfile(path):
        raise UserError(f"the index of index run {run['run_id']} is gone ({path} not found); run 'index' again")
    manifest = lake.read_json(path)
    recorded = run["info"].get("manifest_sha256")  # absent in runs of older versions
    if recorded and sha256_file(path) != recorded:
        raise UserError(f"the index manifest {index_dir}/manifest.json was changed after index run "
                        f"{run['run_id']} wrote it; run 'index' again")
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not shards or not all(isinstance(e, dict) and "offset" in e and "sha256" in e for e in shards) \
            or "model_version" not in manifest or "gender_filter" not in manifest:
        raise UserError(f"the index manifest {index_dir}/manifest.json is not one this version of the project "
                        "wrote (older, or edited); run 'index' again")
    if manifest["model_version"] != model_version:
        raise UserError(f"the newest index was built for model {manifest['model_version']}, not {model_version}; "
                        "run 'index' (or pin --set model_version=...)")
    if manifest["gender_filter"] != gender_filter_on(cfg.source):
        raise UserError(f"the newest index was built with the gender filter {'on' if manifest['gender_filter'] else 'off'}"
                        f" but source.gender_filter says {'on' if gender_filter_on(cfg.source) else 'off'}; "
                        "run 'index' with the same setting")
    for entry in shards:
        verify_files(index_dir, entry)
    return index_dir, manifest


def _refuse_if_erased_since(spark, cfg: Config, index_run: dict) -> None:
    """An index built before an ingest erased accounts still holds their vectors: matching
    with it could show a deleted or banned account, so it is refused."""
    from pyspark.sql import functions as F
    later = (lake.read_table(spark, cfg.lake.path, "runs")
             .where((F.col("stage") == "ingest") & (F.col("status") == "succeeded"))
             .where(F.col("finished_at") > F.lit(index_run["finished_at"]))
             .where(F.get_json_object("info", "$.erased_rows.profiles").cast("long") > 0)
             .select("run_id").limit(1).collect())
    if later:
        raise UserError(f"ingest run {later[0]['run_id']} erased deleted or banned accounts after the newest index "
                        f"(run {index_run['run_id']}) was built; run embed and index first (or the pipeline)")


def recommendations(spark, cfg: Config, run_id: str):
    """(DataFrame of the matches table's rows, not yet written; facts about the search)."""
    from pyspark.sql import functions as F
    mv = lake.latest_model_version(spark, cfg.lake.path, cfg.model_version)
    index_dir, manifest = load_index(spark, cfg, mv)
    m = cfg.match
    queries = match_queries(spark, cfg, mv, index_dir, manifest, m.reciprocal)
    recs = recommend(queries, index_dir, manifest, m.k, "two_tower", 0, m.query_batch, m.settings_filters,
                     m.reciprocal, m.reciprocal_pool, m.partitions)
    out = (recs.withColumn("model_version", F.lit(mv)).withColumn("run_id", F.lit(run_id))
           .withColumn("generated_at", F.current_timestamp()))
    return out, {"model_version": mv, "index_dir": index_dir, "manifest": manifest, "queries": queries}


def publish(spark, cfg: Config, recs) -> dict:
    """One Delta commit replaces the visible matches: readers see the old run or the new one,
    and earlier runs stay readable by version (time travel) until VACUUM."""
    from delta.tables import DeltaTable
    lake.write_table(recs, cfg.lake.path, "matches", mode="overwrite")
    last = DeltaTable.forPath(spark, lake.table_path(cfg.lake.path, "matches")).history(1).first()
    # The commit's own count of what it wrote: no second pass over the table.
    return {"rows": int(last["operationMetrics"]["numOutputRows"]), "delta_version": int(last["version"])}


def run(spark, cfg: Config, run_id: str) -> dict:
    recs, facts = recommendations(spark, cfg, run_id)
    info = publish(spark, cfg, recs)
    # How this version was made: audit checks the published rows against the same settings.
    return {"model_version": facts["model_version"], **info, "k": cfg.match.k,
            "reciprocal": cfg.match.reciprocal, "settings_filters": cfg.match.settings_filters,
            "gender_filter": facts["manifest"]["gender_filter"], "index_dir": facts["index_dir"],
            "index_types": sorted({e["type"] for e in facts["manifest"]["shards"]})}
