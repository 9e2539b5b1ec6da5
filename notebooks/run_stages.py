# Databricks notebook source
# MAGIC %md
# MAGIC # Two-tower matches: run stages as a Databricks workflow task
# MAGIC
# MAGIC Each workflow task runs this notebook with the widget `stages` set to one stage
# MAGIC (`ingest`, `synthesize`, `features`, `train`, `embed`, `index`, `match`, `evaluate`,
# MAGIC `audit`, `export`) or to `pipeline` (which ends with `export` when `sink.url` is set).
# MAGIC The cluster needs the project's dependencies (see
# MAGIC requirements.txt; Databricks runtimes ship Spark and Delta) and this repository as a
# MAGIC Databricks Repo. `overrides` takes the same `key=value` pairs as `--set`, one per line;
# MAGIC set `lake.path` to a `/dbfs/...` path so FAISS shards and models land beside the tables.
# MAGIC Postgres credentials (source.kind=postgres, sink.url) come from the cluster's environment
# MAGIC variables PGUSER and PGPASSWORD (e.g. `{{secrets/scope/key}}` references), never from overrides.

# COMMAND ----------

dbutils.widgets.text("conf", "conf/local.yaml")  # noqa: F821 (Databricks globals)
dbutils.widgets.text("stages", "pipeline")  # noqa: F821
dbutils.widgets.text("overrides", "spark.master=\nlake.path=/dbfs/twotower/lake")  # noqa: F821
dbutils.widgets.text("run_id", "")  # noqa: F821

# COMMAND ----------

import os
import sys

sys.path.insert(0, os.path.dirname(os.getcwd()))  # the repository root, so that `lib` imports

from lib import lake
from lib.cli import pipeline_stages, run_stages, setup_logging
from lib.config import load_config

setup_logging()
overrides = [line.strip() for line in dbutils.widgets.get("overrides").splitlines() if line.strip()]  # noqa: F821
cfg = load_config(dbutils.widgets.get("conf"), overrides)  # noqa: F821
stages = dbutils.widgets.get("stages")  # noqa: F821
stages = pipeline_stages(cfg) if stages == "pipeline" else [s.strip() for s in stages.split(",")]
# Tasks of one workflow run share a run id when the workflow passes one ({{job.run_id}}).
run_id = dbutils.widgets.get("run_id") or lake.new_run_id()  # noqa: F821
results = run_stages(spark, cfg, stages, run_id)  # noqa: F821 (the notebook's SparkSession)
results
