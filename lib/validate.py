"""Named validation rules: every row that breaks one goes to quarantine with its reason.

Nothing is dropped silently. Each rule is (name, condition that marks a bad row, reason);
a row is quarantined under the first rule it breaks. The raw row kept in quarantine never
holds ``name``, ``avatar_url`` or ``bio``.
"""
from __future__ import annotations

from lib.schema import EVENTS, GENDERS, ORIENTATIONS, PRIVATE_COLUMNS

MIN_AGE, MAX_AGE = 18, 100
MIN_HEIGHT_CM, MAX_HEIGHT_CM = 90.0, 250.0


def profile_rules(gender_filter: bool, has_age: bool = True) -> list:
    """Rules for candidate profile rows (columns of the profiles schema plus ``_age_raw``,
    ``_corrupt_record``). A source without ages (Last.fm) may leave age missing."""
    from pyspark.sql import functions as F
    age, gender, orient = F.col("age"), F.col("gender"), F.col("sexual_orientation")
    rules = [
        ("malformed_row", F.col("_corrupt_record").isNotNull(),
         "the line could not be parsed into the header's columns"),
        ("missing_id", F.col("id").isNull() | (F.col("id") == ""), "the row has no id"),
        ("age_not_a_number", F.col("_age_raw").isNotNull() & age.isNull(), "age is not a whole number"),
        ("age_missing", age.isNull(), "age is missing"),
        ("age_under_18", age < MIN_AGE, f"age is under {MIN_AGE}"),
        ("age_over_100", age > MAX_AGE, f"age is over {MAX_AGE}"),
        ("age_range_invalid", _bad_age_setting("age_min") | _bad_age_setting("age_max")
         | F.coalesce(F.col("age_min") > F.col("age_max"), F.lit(False)),
         f"age_min/age_max must be whole numbers in {MIN_AGE}..{MAX_AGE} with age_min <= age_max"),
        ("max_distance_invalid", F.coalesce(~(F.col("max_distance_km") > 0) | F.isnan("max_distance_km"), F.lit(False)),
         "max_distance_km must be a positive number of kilometres"),
        ("unknown_orientation", orient.isNotNull() & ~orient.isin(*ORIENTATIONS),
         f"sexual_orientation is not one of {', '.join(ORIENTATIONS)}"),
    ]
    if not has_age:
        rules = [r for r in rules if r[0] != "age_missing"]
    if gender_filter:
        rules.insert(3, ("unknown_gender", gender.isNull() | ~gender.isin(*GENDERS),
                         f"gender is not one of {', '.join(GENDERS)}"))
    return rules


def _bad_age_setting(name: str):
    from pyspark.sql import functions as F
    c = F.col(name)
    return F.coalesce((c < MIN_AGE) | (c > MAX_AGE), F.lit(False))


def music_rules() -> list:
    """Rules for music preference rows; ``_user_known`` says whether user_id is a profile."""
    from pyspark.sql import functions as F
    return [
        ("missing_id", F.col("id").isNull() | (F.col("id") == ""), "the row has no id"),
        ("missing_user", F.col("user_id").isNull() | (F.col("user_id") == ""), "user_id is missing"),
        ("orphan_user", ~F.col("_user_known"), "user_id points at no profile"),
        ("empty_preference", F.col("genre").isNull() & F.col("artist_name").isNull(),
         "neither genre nor artist_name is given"),
    ]


def interaction_rules() -> list:
    """Rules for interaction rows; ``_user_known``/``_profile_known`` say whether the ids are profiles."""
    from pyspark.sql import functions as F
    return [
        ("missing_id", F.col("id").isNull() | (F.col("id") == ""), "the row has no id"),
        ("missing_user", F.col("user_id").isNull() | (F.col("user_id") == ""), "user_id is missing"),
        ("missing_profile", F.col("profile_id").isNull() | (F.col("profile_id") == ""), "profile_id is missing"),
        ("unknown_event", F.col("event").isNull() | ~F.col("event").isin(*EVENTS),
         f"event is not one of {', '.join(EVENTS)}"),
        ("self_action", F.col("user_id") == F.col("profile_id"), "a user acting on themselves"),
        ("orphan_user", ~F.col("_user_known"), "user_id points at no profile"),
        ("orphan_profile", ~F.col("_profile_known"), "profile_id points at no profile"),
    ]


def apply_rules(df, rules):
    """Add ``_rule`` and ``_reason``: the first rule each row breaks, or null."""
    from pyspark.sql import functions as F
    rule, reason = F.lit(None).cast("string"), F.lit(None).cast("string")
    for name, bad, text in reversed(rules):
        hit = F.coalesce(bad, F.lit(False))
        rule = F.when(hit, F.lit(name)).otherwise(rule)
        reason = F.when(hit, F.lit(text)).otherwise(reason)
    return df.withColumn("_rule", rule).withColumn("_reason", reason)


def mark_duplicates(df, key: str, order: str):
    """Rows whose ``key`` was already seen earlier (by ``order``) break rule duplicate_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    w = Window.partitionBy(key).orderBy(order)
    n = F.when(F.col("_rule").isNull(), F.row_number().over(w))
    dup = F.col("_rule").isNull() & (n > 1)
    return (df.withColumn("_rule", F.when(dup, F.lit("duplicate_id")).otherwise(F.col("_rule")))
            .withColumn("_reason", F.when(dup, F.lit(f"{key} appears more than once; the first row was kept"))
                        .otherwise(F.col("_reason"))))


# Columns ingest adds while checking rows: not part of the raw row.
_WORKING_COLUMNS = ("_rule", "_reason", "_user_known", "_profile_known", "_user_erased", "_profile_erased",
                    "_action", "_erase")


def quarantine_rows(bad, source: str, run_id: str, keep_corrupt_text: bool = True, entity: str = "profiles",
                    person_cols: tuple = ("id",)):
    """Quarantine table rows for the rows of ``bad`` (which carry ``_rule``/``_reason``).

    ``person_cols`` name the columns holding the ids of the people a row is about: they are
    kept beside the raw row so that erasing an account also reaches its quarantined rows.
    """
    from pyspark.sql import functions as F
    cols = [c for c in bad.columns if c not in PRIVATE_COLUMNS and c not in _WORKING_COLUMNS]
    raw = F.to_json(F.struct(*[F.col("`" + c.replace("`", "``") + "`") for c in cols]))
    if not keep_corrupt_text and "_corrupt_record" in cols:
        # The fields of an unparseable line may have shifted, so a name can sit in any of
        # them: keep only where the line was, never its text.
        where = [F.col(c) for c in ("_pos", "id") if c in cols]
        withheld = F.to_json(F.struct(*where, F.lit("<withheld: line may hold private columns>").alias("_corrupt_record")))
        raw = F.when(F.col("_corrupt_record").isNotNull(), withheld).otherwise(raw)
    people = F.filter(F.array(*[F.col(c).cast("string") for c in person_cols]), lambda x: x.isNotNull())
    return bad.select(
        F.lit(run_id).alias("run_id"), F.lit(source).alias("source"), F.lit(entity).alias("entity"),
        F.col("_rule").alias("rule"), F.col("_reason").alias("reason"), raw.alias("raw"),
        people.alias("person_ids"), F.current_timestamp().alias("quarantined_at"))


def height_in_range(height_col):
    """Heights outside [90, 250] cm are nulled (and counted): a typo, not a reason to lose a profile."""
    from pyspark.sql import functions as F
    return F.when((height_col >= MIN_HEIGHT_CM) & (height_col <= MAX_HEIGHT_CM), height_col)
