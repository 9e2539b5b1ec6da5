"""Typed configuration: one YAML file chosen on the command line, ``--set key=value`` on top.

Every key is a field of a dataclass below, so a misspelt key or a value of the wrong type
is refused with a message naming it instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from lib.errors import UserError


@dataclass
class SparkConfig:
    master: str = "local[2]"  # used only when spark-submit did not already set a master
    app_name: str = "twotower"
    conf: dict = field(default_factory=dict)  # extra spark.* settings


@dataclass
class LakeConfig:
    path: str = "./lake"
    # How long erased rows (deleted or banned accounts) stay reachable in table history:
    # VACUUM after an erase removes older files. Delta's own floor is 168 hours (7 days);
    # a smaller value is taken as meant and Delta's safety check is turned off for it.
    vacuum_retention_hours: float = 168.0
    # VACUUM runs at an ingest that removed rows, and otherwise when the last is this old.
    vacuum_every_hours: float = 24.0


@dataclass
class SourceConfig:
    kind: str = "synthetic"  # synthetic | okcupid | lastfm | speeddating | postgres
    path: str = ""  # input file (folder for lastfm) for file sources
    # postgres: a JDBC URL without credentials (they come from PGUSER / PGPASSWORD).
    url: str = ""
    # incremental: upsert what is read (postgres: rows changed since the last run);
    # full: the read is the whole source, and ids it lacks were deleted there (erased).
    mode: str = "incremental"
    max_erase_fraction: float = 0.1  # a full read that would erase more of the source's profiles fails
    jdbc_partitions: int = 4  # parallel JDBC reads per table
    # Incremental reads start this long before the last run's high-water mark, so rows of
    # transactions that committed late are not missed; re-reading them changes nothing.
    overlap_seconds: int = 300
    holdout_fraction: float = 0.2  # share of real positive interactions held out for evaluation
    num_profiles: int = 5000  # synthetic only
    seed: int = 42
    archetypes_file: str = "conf/archetypes.yaml"
    genres_per_profile: int = 4  # synthetic music preferences per profile (mean)
    # auto: on, except for sources without genders (lastfm). false: no gender/orientation fit.
    gender_filter: str = "auto"
    max_quarantine_fraction: float = 0.05  # fail the ingest past this share of bad rows


@dataclass
class SynthesizeConfig:
    seed: int = 7
    candidate_draws: int = 10  # random slots drawn per user for the negatives (never a cross join)
    positives_per_user: int = 10
    negatives_per_user: int = 10
    noise: float = 0.5  # std of the Gaussian noise added to the compatibility score that picks the positives
    retrieve: int = 200  # candidates per user found by the score's feature map, then rescored exactly
    ivf_min_pool: int = 200000  # a pool of people who fit this large gets an IVF index (approximate)
    holdout_fraction: float = 0.2  # share of each user's positives held out for evaluation


@dataclass
class FeaturesConfig:
    max_categories: int = 30  # one-hot vocabulary size per categorical (plus other, missing)
    max_multi_hot: int = 100  # a multi-valued field with more values becomes embedding-bag ids
    max_bag_vocab: int = 50000  # embedding-bag vocabulary per field; rarer values share hashed buckets
    hash_buckets: int = 100  # per embedding-bag field, for values never seen in fitting
    max_bag_ids: int = 16  # ids kept per multi-valued embedding-bag field (most frequent first)
    min_count: int = 2  # a value seen fewer times gets no vocabulary entry of its own
    new_user_days: int = 30  # a profile younger than this is flagged new


@dataclass
class TrainConfig:
    num_proc: int = 2  # Horovod processes (Spark tasks)
    epochs: int = 8
    batch_size: int = 1024  # per rank
    learning_rate: float = 0.003
    hidden_units: list = field(default_factory=lambda: [128])
    embedding_dim: int = 64
    bag_dim: int = 16  # embedding size of each embedding-bag field (city, job title, artists, ...)
    dropout: float = 0.0  # after each hidden layer
    loss: str = "softmax"  # softmax (in-batch InfoNCE) | bce (sampled negatives) | triplet
    logq_correction: bool = True  # softmax: subtract log of each candidate's share of the positives
    margin: float = 0.2  # triplet
    lr_scaling: str = "linear"  # linear: learning_rate x number of ranks (fixed per-rank batch) | none
    hard_negatives: bool = False  # one negative per pair mined from the previous model's matches
    hard_negative_top: int = 50  # ... among its top this many that are not positives
    launcher: str = "spark"  # spark: horovod.spark.run on the executors | horovodrun: outside Spark (train.hosts)
    hosts: str = ""  # horovodrun -H (default localhost:<num_proc>)
    resume: bool = True  # a rerun after a failure resumes from the last finished epoch's checkpoint
    temperature: float = 0.05
    seed: int = 1


@dataclass
class IndexConfig:
    max_shard_size: int = 500000  # a filter group larger than this is split into shards
    type: str = "auto"  # auto: flat up to flat_max profiles, else ivf | flat | ivf | hnsw
    flat_max: int = 100000  # auto: the largest shard searched exactly
    ivf_nlist: int = 0  # IVF lists; 0: about 4 x sqrt(shard size), a power of two
    nprobe: int = 32  # IVF lists searched per query (see benchmarks/bulk_topk.py)
    hnsw_m: int = 32  # HNSW links per node
    hnsw_ef_search: int = 256  # HNSW search breadth (at least the over-fetch)
    keep: int = 2  # indexes kept: each run removes older ones (they hold erased accounts' vectors)


@dataclass
class MatchConfig:
    k: int = 50
    query_batch: int = 1024  # users searched together in one FAISS call
    settings_filters: bool = True  # each side within the other's age range and maximum distance, if set
    reciprocal: bool = False  # rerank by the harmonic mean of both directions' scores
    reciprocal_pool: int = 200  # reciprocal: the best this many (one direction) are reranked
    partitions: int = 0  # 0: every task meets every filter group (no extra pass); N: N tasks by filter group (fewer shards per worker)


@dataclass
class SinkConfig:
    # The app's Postgres: a JDBC URL without credentials (PGUSER / PGPASSWORD). Empty: no export.
    url: str = ""
    table: str = "public.matches"
    write_partitions: int = 4  # parallel JDBC writers


@dataclass
class EvaluateConfig:
    seed: int = 11  # random baseline


@dataclass
class AuditConfig:
    short_sample: int = 1000  # users with fewer than K matches whose every candidate is recounted


@dataclass
class TrackingConfig:
    enabled: bool = True  # MLflow: one run per model version (train), its metrics (evaluate)
    # Empty: MLflow's local default kept under the lake (sqlite:///<lake>/mlflow/mlflow.db).
    # Else a tracking server (http://host:5000; credentials from MLFLOW_TRACKING_USERNAME /
    # MLFLOW_TRACKING_PASSWORD) or databricks.
    uri: str = ""
    experiment: str = "twotower"  # on Databricks a workspace path, e.g. /Shared/twotower


@dataclass
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run_id: str = ""  # pin the run id (default: a new one per invocation)
    model_version: str = ""  # pin the model version read by embed/index/match/evaluate


SOURCE_KINDS = ("synthetic", "okcupid", "lastfm", "speeddating", "postgres")
FILE_SOURCES = ("okcupid", "lastfm", "speeddating")
NO_GENDER_SOURCES = ("lastfm",)  # sources whose rows carry no gender


def load_config(path: str | None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (YAML) and apply ``key=value`` overrides; raise UserError on any problem."""
    raw: dict = (read_yaml(path, "config file", "pass an existing YAML file to --conf") or {}) if path else {}
    if not isinstance(raw, dict):
        raise UserError(f"config file {path!r} must be a mapping of sections, not {type(raw).__name__}")
    cfg = _build(Config, raw, "")
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set lake.path=/tmp/lake")
        key, value = item.split("=", 1)
        _set(cfg, key.strip(), value)
    _check(cfg)
    return cfg


def read_yaml(path: str, what: str, hint: str):
    """The YAML document in ``path`` (None when empty); a missing or broken file is a UserError."""
    if not os.path.exists(path):
        raise UserError(f"{what} {path!r} not found; {hint}")
    if not os.path.isfile(path):
        raise UserError(f"{what} {path!r} is not a file; {hint}")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None


def _build(cls, raw: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise UserError(f"unknown config key {name!r}; known keys here: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, name)
    return cls(**kwargs)


def _coerce(tp, value: Any, name: str):
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {name!r} is a section; give it a mapping, not {value!r}")
        return _build(tp, value, name + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        try:
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            return number
    elif tp is str:
        if isinstance(value, bool):  # YAML's true/false for a key such as gender_filter (auto|true|false)
            return str(value).lower()
        if isinstance(value, (str, int, float)):
            return str(value)
    elif tp in (list, dict):
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if isinstance(value, tp):
            return value
    raise UserError(f"config key {name!r} expects {tp.__name__}, got {value!r}")


def _set(cfg: Config, key: str, value: str) -> None:
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        name = ".".join(parts[: i + 1])
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            raise UserError(f"--set {key}: unknown config key {name!r}")
        if i == len(parts) - 1:
            tp = typing.get_type_hints(type(obj))[part]
            if dataclasses.is_dataclass(tp):
                raise UserError(f"--set {key}: {name!r} is a section; set one of its keys, e.g. {name}.<key>=...")
            if tp is dict:
                raise UserError(f"--set {key}: set a single entry, e.g. --set {name}.<entry>=...")
            setattr(obj, part, _coerce(tp, value, name))
            return
        nxt = getattr(obj, part)
        if isinstance(nxt, dict):  # free-form mapping such as spark.conf
            nxt[".".join(parts[i + 1:])] = value
            return
        obj = nxt


_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _check(cfg: Config) -> None:
    """Range checks that a type alone cannot express."""
    for name, value in (("run_id", cfg.run_id), ("model_version", cfg.model_version)):
        # They name folders in the lake and go into Delta predicates: no paths, no quotes.
        if value and (not _VERSION_RE.match(value) or ".." in value):
            raise UserError(f"{name} {value!r} may hold only letters, digits, '_', '-' and '.' (no '..'), "
                            "like 20261203T131100Z-ab12cd")
    if not cfg.lake.path.strip():
        raise UserError("lake.path is empty; give a folder, e.g. --set lake.path=./lake")
    from lib.train.loss import LOSSES
    if cfg.train.loss not in LOSSES:
        raise UserError(f"train.loss {cfg.train.loss!r} is not one of {', '.join(LOSSES)}")
    if cfg.train.lr_scaling not in ("linear", "none"):
        raise UserError(f"train.lr_scaling {cfg.train.lr_scaling!r} is not one of linear, none")
    if cfg.train.hard_negative_top < 1:
        raise UserError(f"train.hard_negative_top must be at least 1, got {cfg.train.hard_negative_top}")
    if cfg.train.launcher not in ("spark", "horovodrun"):
        raise UserError(f"train.launcher {cfg.train.launcher!r} is not one of spark, horovodrun")
    if not 0.0 <= cfg.train.dropout < 1.0:
        raise UserError(f"train.dropout must be in [0, 1), got {cfg.train.dropout}")
    if cfg.train.margin <= 0:
        raise UserError(f"train.margin must be positive, got {cfg.train.margin}")
    if cfg.train.hosts and not re.fullmatch(r"[A-Za-z0-9_.\-]+:[1-9][0-9]*(,[A-Za-z0-9_.\-]+:[1-9][0-9]*)*",
                                            cfg.train.hosts):
        raise UserError(f"train.hosts {cfg.train.hosts!r} is not a horovodrun host list; "
                        "write HOST:SLOTS[,HOST:SLOTS...], e.g. gpu1:4,gpu2:4")
    # Any user part before '@' (user:password, a bare token) or a secret in the query.
    if re.search(r"//[^?#]*@", cfg.tracking.uri) or re.search(r"(password|token|secret|key)=", cfg.tracking.uri.lower()):
        raise UserError("tracking.uri must not carry credentials; set MLFLOW_TRACKING_USERNAME and "
                        "MLFLOW_TRACKING_PASSWORD (or DATABRICKS_TOKEN) instead")
    if cfg.tracking.enabled and not cfg.tracking.experiment.strip():
        raise UserError("tracking.experiment is empty; name the MLflow experiment, e.g. --set tracking.experiment=twotower")
    if cfg.index.type not in INDEX_TYPES:
        raise UserError(f"index.type {cfg.index.type!r} is not one of {', '.join(INDEX_TYPES)}")
    for name, value in (("index.ivf_nlist", cfg.index.ivf_nlist), ("match.partitions", cfg.match.partitions)):
        if value < 0:
            raise UserError(f"{name} must be 0 (automatic) or more, got {value}")
    if cfg.match.reciprocal and cfg.match.reciprocal_pool < cfg.match.k:
        raise UserError(f"match.reciprocal_pool ({cfg.match.reciprocal_pool}) must be at least match.k "
                        f"({cfg.match.k}): the rerank picks the k best of that pool")
    if cfg.source.kind not in SOURCE_KINDS:
        raise UserError(f"source.kind {cfg.source.kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    if cfg.source.kind in FILE_SOURCES and not cfg.source.path:
        what = "folder" if cfg.source.kind == "lastfm" else "file"
        raise UserError(f"source.kind={cfg.source.kind} needs a {what}: --set source.path=PATH")
    if cfg.source.kind == "postgres" and not cfg.source.url:
        raise UserError("source.kind=postgres needs a JDBC URL: --set source.url=jdbc:postgresql://HOST:5432/DB "
                        "(credentials from the environment: PGUSER, PGPASSWORD)")
    if cfg.source.mode not in ("incremental", "full"):
        raise UserError(f"source.mode must be incremental or full, got {cfg.source.mode!r}")
    gf = str(cfg.source.gender_filter).strip().lower()
    if gf not in ("auto", "true", "false", "yes", "no", "1", "0"):
        raise UserError(f"source.gender_filter must be auto, true or false, got {cfg.source.gender_filter!r}")
    cfg.source.gender_filter = gf
    if cfg.lake.vacuum_retention_hours < 0:
        raise UserError(f"lake.vacuum_retention_hours must be 0 or more, got {cfg.lake.vacuum_retention_hours}")
    positive = {
        "source.num_profiles": cfg.source.num_profiles,
        "synthesize.candidate_draws": cfg.synthesize.candidate_draws,
        "synthesize.positives_per_user": cfg.synthesize.positives_per_user,
        "synthesize.retrieve": cfg.synthesize.retrieve,
        "synthesize.ivf_min_pool": cfg.synthesize.ivf_min_pool,
        "train.num_proc": cfg.train.num_proc,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "train.embedding_dim": cfg.train.embedding_dim,
        "train.bag_dim": cfg.train.bag_dim,
        "index.max_shard_size": cfg.index.max_shard_size,
        "index.flat_max": cfg.index.flat_max,
        "index.nprobe": cfg.index.nprobe,
        "index.hnsw_m": cfg.index.hnsw_m,
        "index.keep": cfg.index.keep,
        "index.hnsw_ef_search": cfg.index.hnsw_ef_search,
        "match.reciprocal_pool": cfg.match.reciprocal_pool,
        "audit.short_sample": cfg.audit.short_sample,
        "match.k": cfg.match.k,
        "match.query_batch": cfg.match.query_batch,
        "features.max_categories": cfg.features.max_categories,
        "features.max_multi_hot": cfg.features.max_multi_hot,
        "features.max_bag_vocab": cfg.features.max_bag_vocab,
        "features.hash_buckets": cfg.features.hash_buckets,
        "features.max_bag_ids": cfg.features.max_bag_ids,
        "features.min_count": cfg.features.min_count,
        "features.new_user_days": cfg.features.new_user_days,
        "source.jdbc_partitions": cfg.source.jdbc_partitions,
        "sink.write_partitions": cfg.sink.write_partitions,
    }
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    # Ids are int32 and each bag field is one embedding table: keep both far from overflow.
    for name, value, most in (("features.max_bag_vocab", cfg.features.max_bag_vocab, 10_000_000),
                              ("features.hash_buckets", cfg.features.hash_buckets, 1_000_000),
                              ("features.max_bag_ids", cfg.features.max_bag_ids, 1000)):
        if value > most:
            raise UserError(f"{name} must be at most {most:,}, got {value:,}")
    if cfg.synthesize.negatives_per_user < 0 or cfg.synthesize.noise < 0:
        raise UserError("synthesize.negatives_per_user and synthesize.noise must be 0 or more")
    if cfg.synthesize.retrieve < cfg.synthesize.positives_per_user:
        raise UserError(f"synthesize.retrieve ({cfg.synthesize.retrieve}) must be at least "
                        f"synthesize.positives_per_user ({cfg.synthesize.positives_per_user}): the positives "
                        "are picked from the retrieved candidates")
    if cfg.source.overlap_seconds < 0:
        raise UserError(f"source.overlap_seconds must be 0 or more, got {cfg.source.overlap_seconds}")
    for name, value in (("synthesize.holdout_fraction", cfg.synthesize.holdout_fraction),
                        ("source.holdout_fraction", cfg.source.holdout_fraction),
                        ("source.max_erase_fraction", cfg.source.max_erase_fraction),
                        ("source.max_quarantine_fraction", cfg.source.max_quarantine_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    if cfg.train.temperature <= 0 or cfg.train.learning_rate <= 0:
        raise UserError("train.temperature and train.learning_rate must be positive")
    if not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in cfg.train.hidden_units):
        raise UserError(f"train.hidden_units must be a list of positive integers, got {cfg.train.hidden_units!r}")


INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")


def gender_filter_on(src: SourceConfig) -> bool:
    """Whether the mutual gender/orientation fit applies: ``auto`` means on unless the
    source has no genders."""
    value = str(src.gender_filter).lower()
    if value == "auto":
        return src.kind not in NO_GENDER_SOURCES
    return value in ("true", "yes", "1")
