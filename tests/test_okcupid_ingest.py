"""The OkCupid adapter and ingest on a sample of real rows (tests/fixtures/okcupid_sample.csv)."""
import csv
import html
import os
import zipfile

import pytest

from lib import ingest, lake
from lib.errors import UserError
from lib.ids import stable_uuid
from tests.conftest import OKCUPID_SAMPLE, make_cfg


def sample_rows():
    with open(OKCUPID_SAMPLE, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def zipped(tmp_path, src=OKCUPID_SAMPLE, name="profiles_revised.csv"):
    path = str(tmp_path / "okc.csv.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(src, name)
    return path


def decoded(text):
    """HTML entities decoded, typographic quotes as plain ASCII ones (the adapter's choice)."""
    text = html.unescape(text)
    for fancy, plain in (("\u2019", "'"), ("\u2018", "'"), ("\u201c", '"'), ("\u201d", '"'), ("\u2026", "...")):
        text = text.replace(fancy, plain)
    return text.strip()


def okc_cfg(lake_dir, path, *more):
    # The sample is enriched with the file's bad rows: far more than the default 5% limit.
    return make_cfg(lake_dir, "source.kind=okcupid", f"source.path={path}", "source.max_quarantine_fraction=0.5",
                    *more)


def profiles_by_id(spark, lake_dir):
    return {r["id"]: r.asDict() for r in lake.read_table(spark, lake_dir, "profiles").collect()}


def test_okcupid_zip_into_profiles(spark, lake_dir, tmp_path):
    rows = sample_rows()
    cfg = okc_cfg(lake_dir, zipped(tmp_path))
    info = ingest.run(spark, cfg, "r1")
    under, over = sum(int(r["age"]) < 18 for r in rows), sum(int(r["age"]) > 100 for r in rows)
    assert under > 0 and over > 0  # the sample holds the file's bad ages
    assert info["rows_read"] == len(rows)
    assert info["quarantined_by_rule"] == {"age_under_18": under, "age_over_100": over}
    got = profiles_by_id(spark, lake_dir)
    assert len(got) == len(rows) - under - over
    for pos, raw in enumerate(rows):
        pid = stable_uuid(f"okcupid:row:{pos}")
        if not 18 <= int(raw["age"]) <= 100:
            assert pid not in got
            continue
        p = got[pid]  # the id is the row's position in the file
        assert p["age"] == int(raw["age"])
        assert p["gender"] == {"m": "male", "f": "female"}[raw["sex"]]
        assert p["sexual_orientation"] == raw["orientation"]
        assert p["drinking_habits"] == (raw["drinks"] or None)
        h = float(raw["height"]) * 2.54 if raw["height"] else None
        assert p["height"] == (round(h, 1) if h and 90 <= h <= 250 else None)
        # Extra columns are kept as categorical attributes, HTML entities decoded.
        for col in ("body_type", "diet", "offspring", "religion", "speaks", "status"):
            assert p["attributes"].get(col) == (decoded(raw[col]) or None)
        assert p["name"] is None and p["bio"] is None and p["setup_complete"] is True
    # The file's exact duplicate rows are distinct people with distinct ids.
    assert len(got) == len(set(got))
    q = lake.read_table(spark, lake_dir, "quarantine").collect()
    assert sorted(r["rule"] for r in q) == sorted(["age_under_18"] * under + ["age_over_100"] * over)
    assert all('"age":' in r["raw"] and r["source"] == "okcupid" for r in q)


def test_positions_hold_when_spark_splits_the_file(spark, lake_dir, tmp_path):
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    try:
        cfg = okc_cfg(lake_dir, OKCUPID_SAMPLE)
        ingest.run(spark, cfg, "r1")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    got = profiles_by_id(spark, lake_dir)
    rows = sample_rows()
    for pos in (0, 150, 399, len(rows) - 1):
        if 18 <= int(rows[pos]["age"]) <= 100:
            p = got[stable_uuid(f"okcupid:row:{pos}")]
            assert (p["age"], p["job_title"]) == (int(rows[pos]["age"]), rows[pos]["job"] or None)


def test_reingest_changes_nothing(spark, lake_dir):
    from delta.tables import DeltaTable
    cfg = okc_cfg(lake_dir, OKCUPID_SAMPLE)
    ingest.run(spark, cfg, "r1")
    before = sorted(map(str, lake.read_table(spark, lake_dir, "profiles").drop("updated_at", "ingest_run_id").collect()))
    ingest.run(spark, cfg, "r2")
    after_df = lake.read_table(spark, lake_dir, "profiles")
    assert sorted(map(str, after_df.drop("updated_at", "ingest_run_id").collect())) == before
    # No row was rewritten: every row still carries the first run's id.
    assert {r[0] for r in after_df.select("ingest_run_id").distinct().collect()} == {"r1"}
    hist = DeltaTable.forPath(spark, lake.table_path(lake_dir, "profiles")).history().collect()
    last = max(hist, key=lambda h: h["version"])
    assert int(last["operationMetrics"].get("numTargetRowsUpdated", "0")) == 0


def test_malformed_lines_are_quarantined_not_lost(spark, lake_dir, tmp_path):
    rows = open(OKCUPID_SAMPLE, encoding="utf-8").read().splitlines()
    bad = tmp_path / "bad.csv"
    # Line 3: too many fields; line 5: not even CSV-shaped.
    lines = rows[:3] + [rows[3] + ",extra,fields"] + rows[4:5] + ["%%% garbage %%%"] + rows[5:60]
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = okc_cfg(lake_dir, bad)
    info = ingest.run(spark, cfg, "r1")
    assert info["quarantined_by_rule"].get("malformed_row") == 2
    assert info["rows_read"] == len(lines) - 1
    assert info["profiles_ingested"] + info["quarantined"] == info["rows_read"]


def test_too_many_bad_rows_fails_and_leaves_profiles_as_they_were(spark, lake_dir, tmp_path):
    cfg = okc_cfg(lake_dir, OKCUPID_SAMPLE)
    ingest.run(spark, cfg, "r1")
    before = lake.read_table(spark, lake_dir, "profiles").count()
    version = spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, 'profiles')}`").first()["version"]
    young = tmp_path / "young.csv"
    rows = open(OKCUPID_SAMPLE, encoding="utf-8").read().splitlines()
    young.write_text("\n".join([rows[0]] + ["16" + r[r.index(","):] for r in rows[1:40]]) + "\n", encoding="utf-8")
    cfg2 = make_cfg(lake_dir, "source.kind=okcupid", f"source.path={young}")
    with pytest.raises(UserError, match=r"39 of 39 rows of profiles \(100.0%\) failed validation"):
        ingest.run(spark, cfg2, "r2")
    assert lake.read_table(spark, lake_dir, "profiles").count() == before
    assert spark.sql(f"DESCRIBE HISTORY delta.`{lake.table_path(lake_dir, 'profiles')}`").first()["version"] == version
    # The bad rows themselves are kept in quarantine, with their rule.
    q = lake.read_table(spark, lake_dir, "quarantine").where("run_id = 'r2'").collect()
    assert len(q) == 39 and {r["rule"] for r in q} == {"age_under_18"}
    assert not os.path.exists(os.path.join(lake_dir, "_staging", "r2"))


def test_corrupt_zip_data_is_an_error_not_a_crash(spark, lake_dir, tmp_path):
    path = zipped(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[200:260] = bytes(60)  # damage the compressed stream, not the zip's directory
    open(path, "wb").write(bytes(data))
    with pytest.raises(UserError, match="cannot be read"):
        ingest.run(spark, okc_cfg(lake_dir, path), "r1")


def test_utf8_bom_and_windows_line_ends_are_read(spark, lake_dir, tmp_path):
    text = open(OKCUPID_SAMPLE, encoding="utf-8").read()
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    info = ingest.run(spark, okc_cfg(lake_dir, path), "r1")
    assert info["rows_read"] == len(sample_rows())
    got = profiles_by_id(spark, lake_dir)[stable_uuid("okcupid:row:0")]
    assert got["age"] == int(sample_rows()[0]["age"]) and not got["attributes"]["status"].endswith("\r")


@pytest.mark.parametrize("content, words", [
    (None, "not found"),
    (b"", "is empty"),
    (b"name,height\nx,3\n", "column(s) age, sex, orientation missing"),
    (b"PK\x03\x04broken zip", "cannot be read"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
    (open(OKCUPID_SAMPLE, "rb").read() + "18,caf\u00e9,m\n".encode("latin-1"), "not UTF-8 text (first bad byte on line 503)"),
    (b"age,sex,orientation,age\n30,m,straight,31\n", "column(s) age more than once"),
], ids=["missing", "empty", "not-okcupid", "broken-zip", "binary", "latin1-late", "duplicate-column"])
def test_bad_files_give_one_clear_error(spark, lake_dir, tmp_path, content, words):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    cfg = make_cfg(lake_dir, "source.kind=okcupid", f"source.path={path}")
    with pytest.raises(UserError) as e:
        ingest.run(spark, cfg, "r1")
    assert words in str(e.value)
    assert not lake.table_exists(spark, lake_dir, "profiles")


def test_private_columns_never_become_attributes(spark, lake_dir, tmp_path):
    rows = open(OKCUPID_SAMPLE, encoding="utf-8").read().splitlines()
    path = tmp_path / "with_names.csv"
    body = [f'{r},Person {i},"likes secret things",http://x.invalid/{i}.jpg' for i, r in enumerate(rows[1:30])]
    body.append("16,broken line with Person Z")  # malformed: its text may hold a name
    path.write_text("\n".join([rows[0] + ",name,bio,avatar_url"] + body) + "\n", encoding="utf-8")
    ingest.run(spark, okc_cfg(lake_dir, path), "r1")
    got = lake.read_table(spark, lake_dir, "profiles").collect()
    assert got and all(not {"name", "bio", "avatar_url"} & set(p["attributes"] or {}) for p in got)
    # The lake keeps no names, photos or bios at all (the app's database has them).
    assert all(p["name"] is None and p["bio"] is None and p["avatar_url"] is None for p in got)
    q = lake.read_table(spark, lake_dir, "quarantine").collect()
    assert q and not any("Person" in r["raw"] or "secret" in r["raw"] for r in q)


def test_okcupid_essays_never_enter_the_lake(spark, lake_dir, tmp_path):
    """The original OkCupid release has essay0..essay9 (free-text bios): they are dropped."""
    path = tmp_path / "essays.csv"
    path.write_text("age,sex,orientation,essay0,diet,essay9\n"
                    "30,m,straight,SECRETESSAY about me,vegan,SECRETESSAY more\n"
                    "12,f,straight,SECRETESSAY a minor,anything,\n", encoding="utf-8")
    ingest.run(spark, okc_cfg(lake_dir, str(path)), "r1")
    (row,) = lake.read_table(spark, lake_dir, "profiles").collect()
    assert row["attributes"] == {"diet": "vegan"}
    quarantined = lake.read_table(spark, lake_dir, "quarantine").collect()
    assert len(quarantined) == 1 and "SECRETESSAY" not in str(quarantined)
