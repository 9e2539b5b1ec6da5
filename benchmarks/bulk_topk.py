"""Bulk top-K: the match job against plain FAISS, the write of the matches, IVF and ALS.

Builds two synthetic lakes (ingest, synthesize, features, train, embed, index: not the
figures, but their seconds are printed), one of N profiles and one of the "ALS size" M,
every profile also a user, embeddings of dimension 64, K=100. Then, on the N lake:
1. the match job from loading the shards to the filtered, merged top-K, everything but the
   final write (``lib.match.recommendations`` into Spark's no-op sink): users per second,
   with ``match.settings_filters=false`` (one round of over-fetch, as the reference). Run
   twice, the second kept (the first starts and warms the Python workers). Then once as
   configured, with the age/distance settings (``match_job_qps_with_settings``: their cost
   is the deeper rounds for the users they leave short);
2. the reference: plain single-process FAISS in this process, the same vectors, the same
   shards per user, the same over-fetch, batches and threads (as many as Spark's cores):
   users per second of loading the shards and searching them (reading the tables not
   counted). ratio = job / reference;
3. the write of the matches table alone (``lib.match.publish`` of matches computed and
   kept on disk first: the Delta write and commit; the row count is the commit's): rows per
   second;
4. IVF: every profile embedding in one IndexIVFFlat built as `index` builds a shard too
   large for flat (nlist, training) against one exact IndexFlatIP: recall@100 and speed-up
   over exact search per nprobe, and at the job's nprobe (index.nprobe);
and on the M lake:
5. Spark ML's ALS (rank 64, implicit, 5 iterations) on the training positives: fit (not a
   goal), then recommendForAllUsers(100) into the no-op sink, against the match job's own
   top-100 on the same lake.

    .venv/bin/python benchmarks/bulk_topk.py            # N=5,000, M=2,000
    .venv/bin/python benchmarks/bulk_topk.py --full     # N=200,000, M=50,000
    .venv/bin/python benchmarks/bulk_topk.py --lake /tmp/bulk   # keep the lakes: a rerun skips their set-up
    .venv/bin/python benchmarks/bulk_topk.py --profiles 20000 --als-profiles 10000

Training runs 3 epochs on 1 Horovod worker (the vectors' quality is not measured here;
--set train.epochs=... changes it). Goals (issue 6): the match job at least 0.75 of plain
FAISS's users per second; the matches written at 500,000 rows/s or more; IVF recall@100 at
least 0.95 at 4 times exact search's speed or more at the job's nprobe.
Last line: JSON with match_job_qps, faiss_qps, ratio, write_rows_per_s, ivf_recall_at_100,
ivf_speedup, nprobe_curve, als_50k_s, match_50k_s and more.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale_setup import lake_config, parse_args, peak_rss_mb  # noqa: E402

K = 100
DIM = 64
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
GOALS = {"ratio": 0.75, "write_rows_per_s": 500_000, "ivf_recall_at_100": 0.95, "ivf_speedup": 4}
SETUP_STAGES = ["ingest", "synthesize", "features", "train", "embed", "index"]


def say(msg: str) -> None:
    print(f"[bulk_topk] {msg}", file=sys.stderr, flush=True)


def lake_of(args, path: str, n: int):
    # This benchmark's defaults (the vectors only need to be a trained model's; --set wins),
    # and what the figures are defined at (K=100, dimension 64: not overridable).
    return lake_config(args, path, n, defaults=("train.epochs=3", "train.num_proc=1"),
                       fixed=(f"match.k={K}", f"train.embedding_dim={DIM}"))


def ensure_lake(spark, cfg) -> float:
    """Build the lake up to its index unless an earlier run already did; the seconds it took."""
    from lib import lake
    from lib.cli import run_stages
    from lib.errors import UserError
    try:
        lake.latest_run(spark, cfg.lake.path, "index")
        say(f"{cfg.lake.path}: has an index already, set-up skipped")
        return 0.0
    except UserError:
        pass
    say(f"{cfg.lake.path}: building {cfg.source.num_profiles:,} profiles up to the index")
    started = time.time()
    run_stages(spark, cfg, SETUP_STAGES, lake.new_run_id())
    seconds = time.time() - started
    say(f"{cfg.lake.path}: set-up {seconds:.1f}s")
    return seconds


# --- 1. the match job -------------------------------------------------------------------

def noop_write(df) -> float:
    """Seconds to compute every row of ``df`` and drop it (Spark's no-op sink: no write cost)."""
    started = time.time()
    df.write.format("noop").mode("overwrite").save()
    return time.time() - started


def time_match_job(spark, cfg, label: str, runs: int = 2):
    """(recs, meta, [first run s, second run s]) of the match job without its final write.

    The first run starts the Python workers and loads the shards into them; the second is
    the steady state a long job is in for all but its first seconds."""
    from pyspark.sql import functions as F
    from lib import lake, match
    recs, meta = match.recommendations(spark, cfg, lake.new_run_id())
    # The users searched, and the deepest first-round fetch per shard (k + oneself + the most
    # exclusions of any user; the job takes the most of each block of users).
    sizes = meta["queries"].agg(F.count("*").alias("n"),
                                F.max(F.coalesce(F.size("excluded"), F.lit(0))).alias("most")).first()
    meta["users"], meta["fetch"] = sizes["n"], cfg.match.k + 1 + (sizes["most"] or 0)
    runs = [noop_write(recs) for _ in range(runs)]
    say(f"match job ({label}): {meta['users']:,} users, fetch {meta['fetch']} per shard, "
        + " then ".join(f"{r:.1f}s" for r in runs))
    return recs, meta, runs


# --- 2. the plain FAISS reference ---------------------------------------------------------

def query_users(spark, cfg, model_version: str):
    """pandas (user_id, embedding, gender, looking_for) of the active users with a vector."""
    from pyspark.sql import functions as F
    from lib import lake
    from lib.eligibility import active_profiles
    emb = (lake.read_table(spark, cfg.lake.path, "user_embeddings")
           .where(F.col("model_version") == model_version).select("user_id", "embedding"))
    users = active_profiles(lake.read_table(spark, cfg.lake.path, "profiles")) \
        .select(F.col("id").alias("user_id"), "gender", "looking_for")
    return emb.join(users, "user_id").toPandas()


def as_matrix(embeddings):
    """[n, d] float32, C order (what FAISS takes) from a column of arrays."""
    import numpy as np
    return np.ascontiguousarray(np.stack(list(embeddings)).astype(np.float32))


def search_groups(users, manifest: dict) -> list:
    """[(manifest entries, query matrix)]: one per group of users who search the same shards
    (same gender, same sorted looking_for), as the job groups them; users no shard fits are
    left out (the job skips them too)."""
    from lib.match import shards_for
    keys = [(g, tuple(sorted(lf)) if lf is not None else ()) for g, lf in zip(users["gender"], users["looking_for"])]
    groups = []
    for (gender, lf), grp in users.assign(_key=keys).groupby("_key", sort=False):
        entries = shards_for(manifest["shards"], gender, lf, manifest["gender_filter"])
        if entries:
            groups.append((entries, as_matrix(grp["embedding"])))
    return groups


def faiss_reference_s(groups: list, index_dir: str, fetch: int, batch: int, threads: int) -> float:
    """Seconds of plain FAISS doing the job's searches in this process: each shard loaded once,
    each group's users in batches of ``batch``, each shard searched for min(fetch, its size)."""
    import faiss
    from lib.shard_store import load_shard
    faiss.omp_set_num_threads(threads)
    started = time.time()
    loaded = {}
    for entries, queries in groups:
        for e in entries:
            if e["file"] not in loaded:
                loaded[e["file"]] = load_shard(index_dir, e)
        shards = [loaded[e["file"]] for e in entries]
        for start in range(0, len(queries), batch):
            part = queries[start:start + batch]
            for s in shards:
                kf = min(fetch, s.count)
                if kf:
                    s.index.search(part, kf)
    return time.time() - started


# --- 3. the write -----------------------------------------------------------------------

def time_publish(spark, cfg, recs):
    """(rows, seconds) of publishing already computed matches: the write alone."""
    from pyspark import StorageLevel
    from lib import match
    done = recs.persist(StorageLevel.DISK_ONLY)
    try:
        done.count()  # computes the top-K now, so the timing below is the write only
        started = time.time()
        info = match.publish(spark, cfg, done)
        seconds = time.time() - started
    finally:
        done.unpersist()
    say(f"publish: {info['rows']:,} rows in {seconds:.1f}s")
    return info["rows"], seconds


# --- 4. IVF against exact search --------------------------------------------------------

def timed_search(index, queries, k: int, min_s: float = 0.5):
    """(distances, ids, queries per second); small runs repeat until ``min_s`` has passed so
    the rate is not a few milliseconds of timer noise."""
    reps, started = 0, time.time()
    while True:
        d, i = index.search(queries, k)
        reps += 1
        elapsed = time.time() - started
        if elapsed >= min_s:
            return d, i, reps * len(queries) / elapsed


def recall(found, exact) -> float:
    """Mean over queries of |found ∩ exact| / k (the -1 padding of a short IVF answer never
    matches: exact search over at least k vectors has none)."""
    import numpy as np
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(f, e)) / k for f, e in zip(found, exact)]))


def ivf_curve(vectors, queries, cfg_index, threads: int):
    """(nlist, the job's nprobe, exact qps, [{"nprobe", "recall_at_100", "qps", "speedup"}])."""
    import faiss
    from lib.shard_store import build_index
    faiss.omp_set_num_threads(threads)
    k = min(K, len(vectors))
    flat, _ = build_index(vectors, "flat", cfg_index)
    _, exact, flat_qps = timed_search(flat, queries, k)
    # The IVF index exactly as `index` builds a shard too large for flat (nlist, training
    # sample, seed), with the job's nprobe (index.nprobe, at most nlist) among the points.
    ivf, params = build_index(vectors, "ivf", cfg_index)
    nlist, job_nprobe = params["nlist"], params["nprobe"]
    say(f"IVF: {len(vectors):,} vectors, {len(queries):,} queries, nlist {nlist}, job's nprobe {job_nprobe}; "
        f"exact {flat_qps:,.0f} queries/s")
    curve = []
    for nprobe in sorted({p for p in NPROBES if p <= nlist} | {job_nprobe}):
        ivf.nprobe = nprobe
        _, found, qps = timed_search(ivf, queries, k)
        point = {"nprobe": nprobe, "recall_at_100": round(recall(found, exact), 4), "qps": round(qps, 1),
                 "speedup": round(qps / flat_qps, 2)}
        say(f"IVF: {point}")
        curve.append(point)
    return nlist, job_nprobe, flat_qps, curve


def ivf_figures(spark, cfg, model_version: str, users, max_queries: int, threads: int) -> dict:
    import numpy as np
    from pyspark.sql import functions as F
    from lib import lake
    profiles = (lake.read_table(spark, cfg.lake.path, "profile_embeddings")
                .where(F.col("model_version") == model_version).select("embedding").toPandas())
    vectors = as_matrix(profiles["embedding"])
    rng = np.random.default_rng(0)
    picked = rng.choice(len(users), size=min(max_queries, len(users)), replace=False)
    queries = as_matrix(users["embedding"].iloc[np.sort(picked)])
    nlist, nprobe, flat_qps, curve = ivf_curve(vectors, queries, cfg.index, threads)
    at = next(p for p in curve if p["nprobe"] == nprobe)
    # Where the recall goal is first met: the nprobe to choose if the job's is not it.
    meets = [p["nprobe"] for p in curve if p["recall_at_100"] >= GOALS["ivf_recall_at_100"]]
    return {"ivf_recall_at_100": at["recall_at_100"], "ivf_speedup": at["speedup"], "ivf_nprobe": nprobe,
            "ivf_nprobe_for_recall_goal": meets[0] if meets else None, "ivf_nlist": nlist, "ivf_vectors": len(vectors), "ivf_queries": len(queries),
            "flat_qps": round(flat_qps, 1), "nprobe_curve": curve}


# --- 5. ALS against the match job ----------------------------------------------------------

def als_ratings(spark, cfg):
    """(user, item, rating) of the training positives, ids as consecutive ints (indexed by
    Spark: ALS takes int ids, the lake has strings)."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import functions as F
    from lib import lake
    positives = (lake.read_table(spark, cfg.lake.path, "interactions")
                 .where((F.col("split") == "train") & (F.col("label") == 1))
                 .select("user_id", "profile_id"))
    indexer = StringIndexer(inputCols=["user_id", "profile_id"], outputCols=["user", "item"])
    indexed = indexer.fit(positives).transform(positives)
    return indexed.select(F.col("user").cast("int"), F.col("item").cast("int"), F.lit(1.0).alias("rating"))


def als_figures(spark, cfg) -> dict:
    from pyspark.ml.recommendation import ALS
    ratings = als_ratings(spark, cfg)
    als = ALS(rank=DIM, maxIter=5, implicitPrefs=True, coldStartStrategy="drop", seed=1,
              userCol="user", itemCol="item", ratingCol="rating")
    started = time.time()
    model = als.fit(ratings)
    fit_s = time.time() - started
    users = model.userFactors.count()
    recommend_s = noop_write(model.recommendForAllUsers(K))
    say(f"ALS: fit {fit_s:.1f}s, top-{K} for {users:,} users {recommend_s:.1f}s")
    return {"als_fit_s": fit_s, "als_50k_s": recommend_s, "als_users": users}


# --- the run --------------------------------------------------------------------------

def main() -> None:
    def more(p):
        p.add_argument("--als-profiles", type=int, help="profiles of the ALS comparison (default 2,000; --full 50,000)")
        p.add_argument("--no-settings-run", action="store_true", help="skip the run with the age/distance settings")
    args = parse_args(__doc__, 5_000, 200_000, more=more)
    args.m = args.als_profiles or (50_000 if args.full else 2_000)
    from lib.cli import setup_logging
    setup_logging()
    root = args.lake or tempfile.mkdtemp(prefix="bulk-topk-")
    from lib.session import build_spark
    try:
        cfg_n = lake_of(args, os.path.join(root, f"n{args.n}"), args.n)
        cfg_m = lake_of(args, os.path.join(root, f"n{args.m}"), args.m)
        spark = build_spark(cfg_n)  # one session for both lakes: a config only names the lake
        # Spark's cores (local[2]: 2): what the job has, so what the reference gets too.
        threads = spark.sparkContext.defaultParallelism
        setup = {f"n{args.n}": ensure_lake(spark, cfg_n), f"n{args.m}": ensure_lake(spark, cfg_m)}

        # The ratio compares the search itself: without the age/distance settings, one round
        # of the over-fetch reaches K for (almost) everyone, as in the reference. The settings'
        # own cost (deeper rounds for those they leave short) is timed next, as the job runs.
        plain = copy.deepcopy(cfg_n)
        plain.match.settings_filters = False
        recs, meta, match_runs = time_match_job(spark, plain, f"n{args.n}, settings off")
        settings_runs = ([None] if args.no_settings_run else
                         time_match_job(spark, cfg_n, f"n{args.n}, settings on", runs=1)[2])
        driver_rss = peak_rss_mb()  # the job's driver, before the reference loads anything here

        users = query_users(spark, cfg_n, meta["model_version"])
        ref_users = len(users)
        if ref_users != meta["users"]:
            say(f"warning: the reference has {ref_users:,} users, the job {meta['users']:,}")
        groups = search_groups(users, meta["manifest"])
        faiss_s = faiss_reference_s(groups, meta["index_dir"], meta["fetch"], cfg_n.match.query_batch, threads)
        say(f"plain FAISS: {ref_users:,} users in {faiss_s:.1f}s ({threads} threads)")
        del groups

        rows, write_s = time_publish(spark, cfg_n, recs)
        ivf = ivf_figures(spark, cfg_n, meta["model_version"], users, 10_000, threads)
        del users

        als = als_figures(spark, cfg_m)
        _, meta_m, match_m_runs = time_match_job(spark, cfg_m, f"n{args.m}")
        spark.stop()
    finally:
        if not args.lake:
            shutil.rmtree(root, ignore_errors=True)
    job_qps = meta["users"] / match_runs[1]
    ref_qps = ref_users / faiss_s
    print(json.dumps({
        "profiles": args.n, "users": meta["users"], "dim": DIM, "k": K, "epochs": cfg_n.train.epochs,
        "shards": len(meta["manifest"]["shards"]), "fetch": meta["fetch"], "threads": threads,
        "match_job_qps": round(job_qps, 1), "match_s_runs": [round(s, 2) for s in match_runs],
        "faiss_qps": round(ref_qps, 1), "faiss_s": round(faiss_s, 2),
        "ratio": round(job_qps / ref_qps, 3),
        "match_job_qps_with_settings": round(meta["users"] / settings_runs[-1], 1) if settings_runs[-1] else None,
        "ratio_with_settings": round(meta["users"] / settings_runs[-1] / ref_qps, 3) if settings_runs[-1] else None,
        "write_rows_per_s": round(rows / write_s, 1), "write_rows": rows, "write_s": round(write_s, 2),
        **ivf,
        "als_profiles": args.m, "als_users": als["als_users"], "als_fit_s": round(als["als_fit_s"], 2),
        "als_50k_s": round(als["als_50k_s"], 2),
        "match_50k_s": round(match_m_runs[1], 2), "match_50k_s_runs": [round(s, 2) for s in match_m_runs],
        "match_50k_users": meta_m["users"],
        "als_vs_match": round(als["als_50k_s"] / match_m_runs[1], 2),
        "driver_peak_rss_mb": round(driver_rss, 1),
        "setup_s": round(sum(setup.values()), 1), "setup_s_by_lake": {k: round(v, 1) for k, v in setup.items()},
        "goals": GOALS,
    }))


if __name__ == "__main__":
    main()
