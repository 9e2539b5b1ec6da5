import uuid

import pytest

from lib.ids import NAMESPACE, stable_uuid, stable_uuid_col
from lib.schema import derive_looking_for, fits, looking_for_col, looking_for_defaulted_col

EVERYONE = ["female", "male", "non-binary"]

# (gender, orientation) -> (genders sought, defaulted), from the rules in DESIGN.md.
CASES = [
    ("male", "straight", ["female"], False),
    ("female", "straight", ["male"], False),
    ("male", "gay", ["male"], False),
    ("female", "gay", ["female"], False),
    ("female", "lesbian", ["female"], False),
    ("male", "bisexual", EVERYONE, False),
    ("non-binary", "pansexual", EVERYONE, False),
    ("female", "queer", EVERYONE, False),
    ("non-binary", "straight", EVERYONE, True),
    ("male", "asexual", EVERYONE, True),
    ("male", None, EVERYONE, True),
    (None, "straight", EVERYONE, True),
]


@pytest.mark.parametrize("gender, orientation, seeks, defaulted", CASES)
def test_derive_looking_for(gender, orientation, seeks, defaulted):
    got, was_default = derive_looking_for(gender, orientation)
    assert sorted(got) == seeks and was_default == defaulted


def test_spark_twin_matches_and_given_wins(spark):
    from pyspark.sql import functions as F
    rows = [(g, o, None) for g, o, _, _ in CASES] + [("male", "straight", ["male", "female", "male"])]
    df = spark.createDataFrame(rows, "gender string, orientation string, given array<string>")
    out = df.select(looking_for_col(F.col("gender"), F.col("orientation"), F.col("given")).alias("lf"),
                    looking_for_defaulted_col(F.col("gender"), F.col("orientation"), F.col("given")).alias("d")
                    ).collect()
    for (g, o, seeks, defaulted), r in zip(CASES, out):
        assert r["lf"] == seeks, (g, o)
        assert r["d"] == defaulted, (g, o)
    assert out[-1]["lf"] == ["female", "male"] and out[-1]["d"] is False


def test_fit_is_mutual():
    assert fits("male", ["female"], "female", ["male"])
    assert not fits("male", ["female"], "female", ["female"])  # she seeks women
    assert not fits("female", ["female"], "male", ["female"])  # she does not seek men


def test_stable_uuid_is_uuid5_and_spark_agrees(spark):
    from pyspark.sql import functions as F
    names = ["okcupid:row:0", "okcupid:row:59945", "synthetic:42:7", "ünïcode:✓", ""]
    for n in names:
        assert stable_uuid(n) == str(uuid.uuid5(NAMESPACE, n))
    got = [r[0] for r in spark.createDataFrame([(n,) for n in names], "n string")
           .select(stable_uuid_col(F.col("n"))).collect()]
    assert got == [str(uuid.uuid5(NAMESPACE, n)) for n in names]
