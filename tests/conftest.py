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


# --- the app's Postgres (scripts/postgres.sh) -------------------------------------------
PG_SCRIPT = os.path.join(ROOT, "scripts", "postgres.sh")
PG_SCHEMA = os.path.join(ROOT, "db", "schema.sql")
PG_USER = "twotower"


def pg_password() -> str:
    return os.environ.get("TWOTOWER_PG_PASSWORD", "twotower-test")


@pytest.fixture(scope="session")
def postgres():
    """JDBC URL of the database ``twotower`` on the local server of scripts/postgres.sh,
    started when it is not running (and left running: a second start does nothing). A
    server that cannot start fails the tests that need it, never skips them."""
    import subprocess
    p = subprocess.run([PG_SCRIPT, "start"], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"scripts/postgres.sh start failed: {(p.stderr or p.stdout).strip()}", pytrace=False)
    return subprocess.run([PG_SCRIPT, "url"], capture_output=True, text=True, check=True).stdout.strip()


def pg_admin_connect(url: str):
    """An autocommit psycopg connection to the database of ``url`` as the test role."""
    import psycopg
    hostport, dbname = url[len("jdbc:postgresql://"):].split("/", 1)
    host, port = hostport.split(":")
    return psycopg.connect(host=host, port=port, dbname=dbname, user=PG_USER, password=pg_password(),
                           autocommit=True)


@pytest.fixture
def pg_db(postgres, monkeypatch):
    """A fresh database with db/schema.sql applied, PGUSER/PGPASSWORD set; yields its JDBC
    URL and drops it afterwards."""
    import uuid
    name = f"test_{uuid.uuid4().hex[:12]}"
    with pg_admin_connect(postgres) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres.rsplit("/", 1)[0] + "/" + name
    monkeypatch.setenv("PGUSER", PG_USER)
    monkeypatch.setenv("PGPASSWORD", pg_password())
    try:
        with pg_admin_connect(url) as conn, open(PG_SCHEMA, encoding="utf-8") as f:
            conn.execute(f.read())
        yield url
    finally:
        with pg_admin_connect(postgres) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
