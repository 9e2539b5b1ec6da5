"""OkCupid adapter: the public profiles_revised.csv(.zip) into the profiles schema.

Ids come from the row's position in the file (the file has exact duplicate rows, so its
content cannot identify a row). Columns the schema has no field for are kept in
``attributes`` as extra categorical values.
"""
from __future__ import annotations

import re

from lib.errors import UserError
from lib.schema import PRIVATE_COLUMNS
from lib.sources.files import CORRUPT, read_csv_with_position, read_header, stage_csv

# OkCupid column -> profiles column (the rest go to ``attributes``). A file with names,
# photos or bios keeps them in their own columns, never among the attributes (features).
MAPPED = {"age": "age", "sex": "gender", "orientation": "sexual_orientation", "drinks": "drinking_habits",
          "smokes": "smoking_habits", "education": "education_level", "job": "job_title", "height": "height",
          **{c: c for c in PRIVATE_COLUMNS}}
TEXT = ("drinking_habits", "smoking_habits", "education_level", "job_title") + PRIVATE_COLUMNS
REQUIRED = ("age", "sex", "orientation")
# OkCupid's free-text essays (essay0..essay9 in the original release) are bios: never kept.
ESSAY = re.compile(r"^essay\d*$", re.IGNORECASE)
SEX = {"m": "male", "f": "female"}
# Entities seen in the file; decoded to plain ASCII so "doesn&rsquo;t" and "doesn't" are one value.
ENTITIES = {"&rsquo;": "'", "&lsquo;": "'", "&ldquo;": '"', "&rdquo;": '"', "&quot;": '"', "&#39;": "'",
            "&lt;": "<", "&gt;": ">", "&hellip;": "...", "&amp;": "&"}
INCH_CM = 2.54


def unescape_col(c):
    from pyspark.sql import functions as F
    for entity, text in ENTITIES.items():
        c = F.replace(c, F.lit(entity), F.lit(text))
    return c


def read_okcupid(spark, path: str, staging: str):
    """(raw OkCupid rows mapped to the profiles schema (unvalidated) with ``_pos`` and
    ``_corrupt_record``, whether a malformed line's text may be kept in quarantine).
    Validation happens in ``lib.validate``."""
    from pyspark.sql import functions as F

    csv_path = stage_csv(path, staging)
    header = read_header(csv_path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path!r} is not an OkCupid profiles file: column(s) {', '.join(missing)} missing "
                        f"(found: {', '.join(header[:12])})")
    raw = read_csv_with_position(spark, csv_path, header)

    def clean(name):
        c = F.trim(unescape_col(F.col("`" + name.replace("`", "``") + "`")))
        return F.when(c == "", None).otherwise(c)

    extras = [c for c in header if c not in MAPPED and not ESSAY.match(c)]
    attrs = F.map_from_entries(F.filter(
        F.array(*[F.struct(F.lit(c).alias("k"), clean(c).alias("v")) for c in extras]),
        lambda s: s["v"].isNotNull())) if extras else F.create_map().cast("map<string,string>")
    height_in = clean("height").try_cast("double") if "height" in header else F.lit(None).cast("double")
    sex = F.lower(clean("sex"))
    private = any(c in header for c in PRIVATE_COLUMNS) or any(ESSAY.match(c) for c in header)
    return raw.select(
        F.concat(F.lit("okcupid:row:"), F.col("_pos").cast("string")).alias("_id_name"),
        F.lit(None).cast("timestamp").alias("created_at"),
        F.lit(True).alias("setup_complete"),
        clean("age").alias("_age_raw"),
        F.coalesce(F.element_at(F.create_map(*[F.lit(x) for kv in SEX.items() for x in kv]), sex), sex)
        .alias("gender"),
        F.lower(clean("orientation")).alias("sexual_orientation"),
        *[clean(src).alias(dst) for src, dst in MAPPED.items() if dst in TEXT and src in header],
        F.round(height_in * INCH_CM, 1).alias("height"),
        attrs.alias("attributes"),
        F.col("_pos"), F.col(CORRUPT),
    ), not private


def okcupid_rows(spark, path: str, staging: str):
    """``read_okcupid`` as the SourceRows of the ingest: ids from the row position, age parsed."""
    from pyspark.sql import functions as F
    from lib.ids import stable_uuid_col
    from lib.sources import SourceRows
    raw, keep_text = read_okcupid(spark, path, staging)
    cands = (raw.withColumn("id", stable_uuid_col(F.col("_id_name"))).drop("_id_name")
             .withColumn("age", F.when(F.col("_age_raw").rlike(r"^\s*-?\d{1,4}\s*$"), F.col("_age_raw").cast("int"))))
    return SourceRows(profiles=cands, keep_corrupt_text=keep_text)
