"""The lake: where each table and artifact lives, and the registry of successful runs.

Tables are Delta tables under one path (see the storage contract in DESIGN.md). Models,
FAISS shards and reports are files beside them, each under its run id or model version,
written under a temporary name and renamed so a killed job leaves nothing half-written.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid

from lib.errors import UserError

TABLES = ("profiles", "music_preferences", "interactions", "quarantine", "features",
          "user_embeddings", "profile_embeddings", "matches", "metrics", "runs")


def table_path(lake: str, name: str) -> str:
    assert name in TABLES, name
    return os.path.join(os.path.abspath(lake), name)


def artifact_dir(lake: str, kind: str, version: str) -> str:
    """``<lake>/<kind>/<version>``: models, indexes, reports, preprocessors."""
    return os.path.join(os.path.abspath(lake), kind, version)


RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def prune_artifacts(lake: str, kind: str, keep: int) -> list:
    """Remove all but the newest ``keep`` finished ``<lake>/<kind>/<run id>`` folders (run
    ids sort by time); anything else there (a run in progress, a user's file) is left alone.
    Returns the names removed."""
    parent = os.path.join(os.path.abspath(lake), kind)
    if not os.path.isdir(parent):
        return []
    runs = sorted(n for n in os.listdir(parent) if RUN_ID.fullmatch(n) and os.path.isdir(os.path.join(parent, n)))
    old = runs[:-keep] if keep > 0 else runs
    for name in old:
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return old


def new_run_id() -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def check_writable(lake: str) -> None:
    """Refuse a lake path that is a file or cannot be written, before any work is done."""
    path = os.path.abspath(lake)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"lake.path {path} is a file, not a folder; give a folder")
    probe_dir = path
    while not os.path.exists(probe_dir):  # the nearest folder that exists must be writable
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise UserError(f"lake.path {path}: {probe_dir} is a file, not a folder")
    try:
        with open(os.path.join(probe_dir, f".write-test-{uuid.uuid4().hex[:8]}"), "w") as f:
            name = f.name
        os.remove(name)
    except OSError as e:
        raise UserError(f"lake.path {path} cannot be written ({e.strerror}); give a writable folder") from None


def table_exists(spark, lake: str, name: str) -> bool:
    from delta.tables import DeltaTable
    return DeltaTable.isDeltaTable(spark, table_path(lake, name))


def read_table(spark, lake: str, name: str, hint: str = ""):
    if not table_exists(spark, lake, name):
        raise UserError(f"table {name!r} not found in lake {os.path.abspath(lake)}; "
                        f"run {hint or 'the stage that writes it'} first")
    return spark.read.format("delta").load(table_path(lake, name))


def read_table_or_empty(spark, lake: str, name: str, ddl: str):
    """The table, or an empty DataFrame of ``ddl`` when the source has none (e.g. no music)."""
    if table_exists(spark, lake, name):
        return spark.read.format("delta").load(table_path(lake, name))
    return spark.createDataFrame([], ddl)


def write_table(df, lake: str, name: str, mode: str = "overwrite", replace_where: str | None = None,
                partition_by: list[str] | None = None) -> None:
    """One atomic Delta commit. ``replace_where`` overwrites just the matching rows."""
    w = df.write.format("delta").mode(mode)
    if replace_where:
        w = w.option("replaceWhere", replace_where)
    if mode == "overwrite" and not replace_where:
        w = w.option("overwriteSchema", "true")
    if partition_by:
        w = w.partitionBy(*partition_by)
    w.save(table_path(lake, name))


def replace_slice(spark, df, lake: str, name: str, column: str, value: str, partitioned: bool = True) -> None:
    """Replace the rows of ``name`` where ``column == value`` with ``df`` in one commit; the
    first write creates the table (partitioned by ``column`` unless told otherwise).
    ``value`` is a run id, model version or source name (checked plain names, no quotes)."""
    if table_exists(spark, lake, name):
        write_table(df, lake, name, replace_where=f"{column} = '{value}'")
    else:
        write_table(df, lake, name, partition_by=[column] if partitioned else None)


# --- runs registry -----------------------------------------------------------------
def record_run(spark, lake: str, stage: str, run_id: str, model_version: str, info: dict) -> None:
    """Append one row saying ``stage`` succeeded for ``run_id``; later stages read it."""
    from pyspark.sql import Row
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = Row(stage=stage, run_id=run_id, model_version=model_version or "",
              status="succeeded", finished_at=now, info=json.dumps(info, sort_keys=True, default=str))
    df = spark.createDataFrame([row], "stage string, run_id string, model_version string, "
                                      "status string, finished_at timestamp, info string")
    write_table(df, lake, "runs", mode="append")


def latest_run(spark, lake: str, stage: str, run_id: str = "") -> dict:
    """The newest successful run of ``stage`` (or the pinned ``run_id``) as a dict."""
    from pyspark.sql import functions as F
    if not table_exists(spark, lake, "runs"):
        raise UserError(f"no successful '{stage}' run in lake {os.path.abspath(lake)}; run '{stage}' first")
    runs = read_table(spark, lake, "runs").where((F.col("stage") == stage) & (F.col("status") == "succeeded"))
    if run_id:
        runs = runs.where(F.col("run_id") == run_id)
    row = runs.orderBy(F.col("finished_at").desc()).limit(1).collect()
    if not row:
        which = f"run {run_id!r} of '{stage}'" if run_id else f"successful '{stage}' run"
        raise UserError(f"no {which} in lake {os.path.abspath(lake)}; run '{stage}' first")
    r = row[0].asDict()
    r["info"] = json.loads(r["info"])
    return r


def latest_model_version(spark, lake: str, pinned: str = "") -> str:
    """The model version to use: the pinned one, else that of the newest 'train' run."""
    if pinned:
        path = artifact_dir(lake, "models", pinned)
        if not os.path.isdir(path):
            raise UserError(f"model version {pinned!r} not found under {os.path.dirname(path)}")
        return pinned
    return latest_run(spark, lake, "train")["model_version"]


# --- files --------------------------------------------------------------------------
def write_json_atomic(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def publish_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a fully written directory into place (rename is atomic on one filesystem)."""
    if os.path.exists(final_dir):
        shutil.rmtree(final_dir)
    os.makedirs(os.path.dirname(final_dir), exist_ok=True)
    os.replace(tmp_dir, final_dir)


def staging_dir(lake: str, run_id: str) -> str:
    path = os.path.join(os.path.abspath(lake), "_staging", run_id)
    os.makedirs(path, exist_ok=True)
    return path


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found; the artifact is incomplete, rerun the stage that writes it") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); it was changed by hand or cut short, "
                        "rerun the stage that writes it") from None
