"""Bad input through the real command line: one clear line, non-zero exit, no trace, lake untouched."""
import os
import subprocess

import pytest

from tests.conftest import ROOT

SUBMIT = os.path.join(ROOT, "spark-submit.sh")


def submit(*args, cwd=ROOT):
    p = subprocess.run([SUBMIT, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    return p.returncode, p.stdout + p.stderr


def error_lines(output):
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("args, words", [
    (["nosuchjob"], "unknown job 'nosuchjob'"),
    (["ingest", "--set", "train.epochz=2"], "unknown config key 'train.epochz'"),
    (["ingest", "--set", "match.k=ten"], "config key 'match.k' expects int"),
    (["ingest", "--conf", "/nonexistent.yaml"], "not found"),
    (["ingest", "--set", "source.kind=okcupid", "--set", "source.path=/nonexistent.csv.zip"], "not found"),
    (["train"], "run 'features' first"),
    (["ingest", "--set", "spark.master=bogus"], "Could not parse Master URL: 'bogus'"),
    (["ingest", "--set", "run_id=../.."], "may hold only"),
    (["export"], "export needs the app's database"),
    (["ingest", "--set", "source.kind=postgres", "--set", "source.url=jdbc:postgresql://h/db#password=pw"],
     "must not carry a user or password"),
    (["ingest", "--set", "source.kind=postgres", "--set", "source.url=jdbc:postgresql://h/db;password=pw"],
     "must not carry a user or password"),
    (["ingest", "--set", "source.kind=postgres", "--set", "source.url=jdbc:postgresql://h/db?password=pw"],
     "must not carry a user or password"),
])
def test_user_mistakes_give_one_line(tmp_path, args, words):
    lake_dir = str(tmp_path / "lake")
    rc, out = submit(*args, "--set", f"lake.path={lake_dir}")
    assert rc == 2, out
    errors = error_lines(out)
    assert len(errors) == 1 and words in errors[0], out
    assert "Traceback" not in out
    # Nothing was written: no table, no half-written folder.
    leftovers = [p for p in os.listdir(lake_dir)] if os.path.isdir(lake_dir) else []
    assert leftovers == [], leftovers


def test_lake_path_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    rc, out = submit("ingest", "--set", f"lake.path={f}")
    assert rc == 2 and error_lines(out) == [f"error: lake.path {f} is a file, not a folder; give a folder"]
    assert f.read_text() == "keep me"


def test_a_failed_helper_thread_is_one_line_not_a_traceback(caplog, capsys):
    """Horovod runs its Spark job in a thread; when a rank dies that thread's exception is one
    warning (the main thread's error says what to do)."""
    import threading

    from lib import cli
    saved = threading.excepthook
    threading.excepthook = cli._thread_failed
    try:
        t = threading.Thread(target=lambda: 1 / 0, name="run_spark")
        t.start()
        t.join()
    finally:
        threading.excepthook = saved
    assert "background thread run_spark stopped (ZeroDivisionError: division by zero)" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
