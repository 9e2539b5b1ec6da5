"""The one place a SparkSession is built: master, Delta Lake, jars, sensible local defaults."""
from __future__ import annotations

import glob
import os
import sys

from lib.config import Config
from lib.errors import UserError

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_spark(cfg: Config):
    """Return a SparkSession with Delta configured.

    ``spark.master`` from the config wins when it is set (``local[2]`` in conf/local.yaml);
    an empty one leaves the master to ``spark-submit --master`` (a cluster). Under
    spark-submit the jars come from its ``--jars``; without it (tests, notebooks run
    locally) they come from build/jars.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    if not _submitted():
        # Python workers: this interpreter and this checkout (spark-submit ships a zip instead).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if _ROOT not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in paths if p])
        log4j = os.path.join(_ROOT, "conf", "log4j2.properties")
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
        jars = sorted(glob.glob(os.path.join(_ROOT, "build", "jars", "*.jar")))
        if jars:
            builder = builder.config("spark.jars", ",".join(jars))
    settings = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Small local runs do not need 200 shuffle partitions; clusters override this.
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.structuredLogging.enabled": "false",
        # File listings (VACUUM's among them) as 8 tasks, not Spark's default of up to 10,000:
        # a VACUUM of a small table took 20 s instead of 4 here. Clusters may raise it.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
        # Downstream readers are not all Spark (delta-rs): no deletion vectors.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    }
    settings.update({k: str(v) for k, v in cfg.spark.conf.items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
        # A bad setting (spark.master, a spark.* value) often only shows on first use.
        spark.conf.get("spark.sql.shuffle.partitions")
        spark.sparkContext.setLogLevel("WARN")
    except Exception as e:  # noqa: BLE001 (Py4J and JVM errors have many types)
        raise UserError(f"Spark could not start with these settings ({_cause(e)}); "
                        "check spark.master and the spark.conf entries") from None
    return spark


def _cause(e: Exception) -> str:
    """The innermost JVM message of a Py4J error (e.g. 'Could not parse Master URL: ...')."""
    lines = [ln.strip() for ln in str(e).splitlines() if "Exception: " in ln or "Error: " in ln]
    text = lines[-1].split("Exception: ", 1)[-1].split("Error: ", 1)[-1] if lines else str(e).strip()
    return (text or type(e).__name__)[:300]


def _submitted() -> bool:
    """True inside a Python driver launched by spark-submit (its JVM is already running)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
