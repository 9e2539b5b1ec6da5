"""Shared fixtures: one local SparkSession with Delta for the whole run, a fresh lake per test."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
OKCUPID_SAMPLE = os.path.join(FIXTURES, "okcupid_sample.csv")
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def spark():
    from lib.config import Config
    from lib.session import build_spark
    cfg = Config()
    cfg.spark.master = "local[2]"
    cfg.spark.conf = {"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}
    session = build_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def lake_dir(tmp_path):
    return str(tmp_path / "lake")


def make_cfg(lake_dir: str, *overrides: str):
    """A Config on the defaults of conf/local.yaml with the lake moved and ``key=value`` overrides."""
    from lib.config import load_config
    return load_config(os.path.join(ROOT, "conf", "local.yaml"),
                       [f"lake.path={lake_dir}", f"source.archetypes_file={ROOT}/conf/archetypes.yaml", *overrides])
