"""Names, photos and bios never leave the profiles table."""
import json

from lib.validate import apply_rules, quarantine_rows


def test_quarantine_rows_drop_private_columns(spark):
    from pyspark.sql import functions as F
    df = spark.createDataFrame(
        [("x1", "Alice Example", "https://a.invalid/p.jpg", "I love long walks", 17, None),
         ("x2", "Bob Example", None, "secret bio", 30, "Bob Example,30,secret bio")],
        "id string, name string, avatar_url string, bio string, age int, _corrupt_record string")
    rules = [("malformed_row", F.col("_corrupt_record").isNotNull(), "bad line"),
             ("age_under_18", F.col("age") < 18, "too young")]
    bad = apply_rules(df, rules)
    rows = {r["rule"]: r for r in quarantine_rows(bad, "test", "r1", keep_corrupt_text=False).collect()}
    assert set(rows) == {"age_under_18", "malformed_row"}
    for r in rows.values():
        raw = json.loads(r["raw"])
        assert not {"name", "avatar_url", "bio"} & set(raw)
        assert not any(v in r["raw"] for v in ("Example", "long walks", "secret bio", "a.invalid"))
    # An unparseable line may hold the private columns: its text is withheld.
    assert json.loads(rows["malformed_row"]["raw"]) == {
        "id": "x2", "_corrupt_record": "<withheld: line may hold private columns>"}
    assert json.loads(rows["age_under_18"]["raw"]) == {"id": "x1", "age": 17}
