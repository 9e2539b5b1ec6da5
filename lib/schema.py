"""Table schemas of the storage contract and the rules of who may be matched with whom."""
from __future__ import annotations

GENDERS = ("male", "female", "non-binary")
ORIENTATIONS = ("straight", "gay", "lesbian", "bisexual", "pansexual", "queer", "asexual")

# A person's own match settings (all optional): the ages they want to see and how far away
# (km). ``match`` applies them both ways: each side must be within the other's settings.
SETTINGS_COLUMNS = ("age_min", "age_max", "max_distance_km")

# Never copied into features, logs, quarantine or match tables.
PRIVATE_COLUMNS = ("name", "avatar_url", "bio")

PROFILES_DDL = (
    "id string, created_at timestamp, updated_at timestamp, name string, avatar_url string, "
    "setup_complete boolean, age int, gender string, sexual_orientation string, "
    "looking_for array<string>, age_min int, age_max int, max_distance_km double, "
    "location string, region string, latitude double, longitude double, bio string, "
    "interests array<string>, relationship_goal string, education_level string, job_title string, "
    "height double, drinking_habits string, smoking_habits string, group_id string, "
    "attributes map<string,string>, source string, deleted_at timestamp, banned boolean, "
    "ingest_run_id string, content_hash string"
)
MUSIC_DDL = ("id string, created_at timestamp, user_id string, genre string, artist_name string, "
             "source string, ingest_run_id string, content_hash string")
INTERACTIONS_DDL = ("id string, user_id string, profile_id string, event string, label int, source string, "
                    "split string, created_at timestamp, run_id string, content_hash string")
# Interaction events and their training label; a block is no preference signal (label null)
# but excludes the pair both ways.
EVENTS = ("like", "pass", "match", "message", "block")
EVENT_LABELS = {"like": 1, "match": 1, "message": 1, "pass": 0, "block": None}
QUARANTINE_DDL = ("run_id string, source string, entity string, rule string, reason string, raw string, "
                  "person_ids array<string>, quarantined_at timestamp")
MATCHES_DDL = ("user_id string, rank int, profile_id string, score float, model_version string, "
               "run_id string, generated_at timestamp")


# Columns that are bookkeeping, not content: a change in them alone rewrites nothing.
BOOKKEEPING_COLUMNS = ("updated_at", "ingest_run_id", "run_id", "content_hash")


def with_content_hash(df):
    """Set ``content_hash``: sha-256 of the row's content columns (working columns, those
    starting with '_', and bookkeeping left out). Upserts compare it to skip unchanged rows."""
    from pyspark.sql import functions as F
    content = [c for c in df.columns if c not in BOOKKEEPING_COLUMNS and not c.startswith("_")]
    return df.withColumn("content_hash", F.sha2(F.to_json(F.struct(*content)), 256))


def profile_columns() -> list[str]:
    return [c.strip().split(" ")[0] for c in _split_ddl(PROFILES_DDL)]


def _split_ddl(ddl: str) -> list[str]:
    # Split on commas outside <...> (map<string,string> contains one).
    out, depth, cur = [], 0, ""
    for ch in ddl:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def conform(df, ddl: str, keep: tuple = ()):
    """Select the columns of ``ddl`` in order with its types (absent ones become nulls),
    then the working columns named in ``keep``."""
    from pyspark.sql import functions as F
    out = []
    for part in _split_ddl(ddl):
        name, typ = part.strip().split(" ", 1)
        out.append((F.col(name) if name in df.columns else F.lit(None)).cast(typ).alias(name))
    return df.select(*out, *keep)


def derive_looking_for(gender: str | None, orientation: str | None) -> tuple[list[str], bool]:
    """Genders a person seeks when the profile does not say; and whether it was a default.

    straight -> the other of male/female; gay -> the same gender; lesbian -> female;
    bisexual, pansexual, queer -> everyone; anything not derivable -> everyone (default).
    ``looking_for_col`` is the Spark twin of this function.
    """
    everyone = list(GENDERS)
    if orientation == "straight" and gender in ("male", "female"):
        return (["female"] if gender == "male" else ["male"]), False
    if orientation == "gay" and gender in GENDERS:
        return [gender], False
    if orientation == "lesbian":
        return ["female"], False
    if orientation in ("bisexual", "pansexual", "queer"):
        return everyone, False
    return everyone, True


def looking_for_col(gender, orientation, given):
    """Spark Column: ``given`` when non-empty, else the derivation of ``derive_looking_for``."""
    from pyspark.sql import functions as F
    everyone = F.array(*[F.lit(g) for g in GENDERS])
    derived = (F.when((orientation == "straight") & (gender == "male"), F.array(F.lit("female")))
               .when((orientation == "straight") & (gender == "female"), F.array(F.lit("male")))
               .when((orientation == "gay") & gender.isin(*GENDERS), F.array(gender))
               .when(orientation == "lesbian", F.array(F.lit("female")))
               .otherwise(everyone))
    return F.when(given.isNotNull() & (F.size(given) > 0), F.array_sort(F.array_distinct(given))) \
        .otherwise(F.array_sort(derived))


def looking_for_defaulted_col(gender, orientation, given):
    """Spark Column: true where looking_for fell back to everyone because nothing said otherwise."""
    from pyspark.sql import functions as F
    derivable = (((orientation == "straight") & gender.isin("male", "female"))
                 | ((orientation == "gay") & gender.isin(*GENDERS))
                 | orientation.isin("lesbian", "bisexual", "pansexual", "queer"))
    has_given = given.isNotNull() & (F.size(given) > 0)
    return ~has_given & ~F.coalesce(derivable, F.lit(False))


def fits(user_gender, user_seeks, cand_gender, cand_seeks) -> bool:
    """A pair fits only both ways: each one's gender is among the genders the other seeks."""
    return cand_gender in user_seeks and user_gender in cand_seeks
