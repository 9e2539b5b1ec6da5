"""Speed Dating adapter: the Columbia speed dating experiment CSV (Fisman et al., latin-1)
into profiles and like/pass/match interactions.

One row per date seen from one side: person ``iid`` met partner ``pid`` and decided
``dec`` (1 yes); ``dec_o`` is the partner's decision, ``match`` 1 when both said yes.

- profiles: one per person. A person with rows of their own (an ``iid``) takes age,
  gender, goal, field, career, race, origin and the 17 interest ratings from their first
  row. A person seen only as a partner takes what the partner-side columns say (``age_o``,
  ``race_o``) and the opposite gender of the people they met (the waves pair men with
  women). A partner without ``pid`` who never appears as an ``iid`` is identified by
  (wave, partner number, gender) instead: the file has one such person (wave 5, partner 7).
  Everyone is ``straight`` and set up; ``interests`` are the activities rated 7 or more;
  the raw ratings, race, ``from``, zipcode and income are kept in ``attributes``.
- interactions: per row with a ``pid``, iid's ``like`` (dec 1) or ``pass`` (dec 0) on pid,
  and a ``match`` from iid to pid where ``match`` is 1. Where the file has no reverse row
  (pid, iid), pid's decision ``dec_o`` (and the match) is emitted from pid's side too, so
  each date's two decisions are there once. Rows without ``pid`` give no interaction
  (counted in ``info``).

Coded answers are mapped to the codebook's words (``speed_dating_key.txt``), lower-cased:
``goal`` -> relationship_goal, ``field_cd`` -> education_level (field of study),
``career_c`` -> job_title, ``race`` -> attributes["race"]; where a code is missing the
free-text ``field`` / ``career`` is used, trimmed and lower-cased.

Ids are uuid5 of ``speeddating:iid:<iid>`` (profiles), ``speeddating:dec:<from>:<to>`` and
``speeddating:match:<from>:<to>`` (interactions): the same file gives the same ids.
"""
from __future__ import annotations

from lib.errors import UserError
from lib.ids import stable_uuid_col
from lib.sources import SourceRows
from lib.sources.files import CORRUPT, read_csv_with_position, read_header, stage_csv

ENCODING = "ISO-8859-1"  # latin-1, spelled as Spark wants it
REQUIRED = ("iid", "pid", "gender", "dec", "dec_o", "match")  # the other columns read as empty when absent
INTERESTS = ("sports", "tvsports", "exercise", "dining", "museums", "art", "hiking", "gaming", "clubbing",
             "reading", "tv", "theater", "movies", "concerts", "music", "shopping", "yoga")
INTEREST_MIN = 7  # a rating (1-10) of at least this makes the activity an interest
GENDER = {"0": "female", "1": "male"}
GOAL = {"1": "seemed like a fun night out", "2": "to meet new people", "3": "to get a date",
        "4": "looking for a serious relationship", "5": "to say i did it", "6": "other"}
FIELD = {"1": "law", "2": "math", "3": "social science, psychologist",
         "4": "medical science, pharmaceuticals, and bio tech", "5": "engineering",
         "6": "english/creative writing/journalism", "7": "history/religion/philosophy",
         "8": "business/econ/finance", "9": "education, academia", "10": "biological sciences/chemistry/physics",
         "11": "social work", "12": "undergrad/undecided", "13": "political science/international affairs",
         "14": "film", "15": "fine arts/arts administration", "16": "languages", "17": "architecture",
         "18": "other"}
CAREER = {"1": "lawyer", "2": "academic/research", "3": "psychologist", "4": "doctor/medicine", "5": "engineer",
          "6": "creative arts/entertainment",
          "7": "banking/consulting/finance/marketing/business/ceo/entrepreneur/admin", "8": "real estate",
          "9": "international/humanitarian affairs", "10": "undecided", "11": "social work",
          "12": "speech pathology", "13": "politics", "14": "pro sports/athletics", "15": "other",
          "16": "journalism", "17": "architecture"}
RACE = {"1": "black/african american", "2": "european/caucasian-american", "3": "latino/hispanic american",
        "4": "asian/pacific islander/asian-american", "5": "native american", "6": "other"}


def read_speeddating(spark, path: str, staging: str) -> SourceRows:
    """The Speed Dating CSV ``path`` (plain or a zip holding it) as candidate rows
    (unvalidated; see ``SourceRows``). ``staging``: where a zipped file is unpacked.

    A line that cannot be parsed, or whose ``iid`` is not a whole number, becomes a profile
    row with ``_corrupt_record`` set, so it reaches quarantine. ``info``: persons,
    persons_only_as_partner, rows_without_pid, rows_without_decision, malformed_rows.
    """
    from pyspark.sql import functions as F

    csv_path = stage_csv(path, staging, encoding=ENCODING)
    header = read_header(csv_path, encoding=ENCODING)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path!r} is not a Speed Dating file: column(s) {', '.join(missing)} missing "
                        f"(found: {', '.join(header[:12])}); give speed_dating_waves_1_15.csv or a file "
                        "with its header")
    raw = read_csv_with_position(spark, csv_path, header, encoding=ENCODING)

    def clean(name):
        if name not in header:
            return F.lit(None).cast("string")
        c = F.trim(F.col(f"`{name}`"))
        return F.when(c != "", c)

    def code(name):
        # "8", "8.0" -> "8"; null for anything that is not a whole number.
        c = clean(name)
        return F.when(c.rlike(r"^[0-9]+(\.0*)?$"), F.regexp_replace(c, r"\.0*$", ""))

    def words(mapping, c):
        return F.element_at(F.create_map(*[F.lit(x) for kv in mapping.items() for x in kv]), c)

    rows = raw.select(
        "_pos", CORRUPT,
        *[code(c).alias(c) for c in ("iid", "pid", "gender", "dec", "dec_o", "match", "wave", "id", "partner",
                                     "goal", "field_cd", "career_c", "race", "race_o")],
        *[clean(c).alias(c) for c in ("age", "age_o", "field", "career", "from", "zipcode", "income")],
        *[clean(c).alias(f"i_{c}") for c in INTERESTS], clean("iid").alias("_iid_raw"))
    ok = F.col(CORRUPT).isNull() & F.col("iid").isNotNull()
    good = rows.where(ok)

    # Persons with rows of their own: everything from their first row.
    own_cols = ["gender", "age", "goal", "field_cd", "field", "career_c", "career", "race", "from", "zipcode",
                "income", "wave", "id"] + [f"i_{c}" for c in INTERESTS]
    first = F.min_by(F.struct(*own_cols), F.col("_pos"))
    own = good.groupBy("iid").agg(first.alias("r"), F.min("_pos").alias("_pos")).select("iid", "_pos", "r.*")

    # Persons only seen as a partner: the partner-side columns, the opposite gender.
    as_partner = good.where(F.col("pid").isNotNull()).join(own.select(F.col("iid").alias("pid")), "pid",
                                                           "left_anti")
    partner_only = _partner_persons(as_partner.withColumn("_name", F.concat(F.lit("speeddating:iid:"), "pid")))
    # A missing pid is resolved through (wave, partner number, opposite gender) when that
    # person is known; otherwise the partner is a person of their own, named by those.
    known = (own.select("wave", F.col("id").alias("partner"), F.col("gender").alias("_pg"))
             .unionByName(good.where(F.col("pid").isNotNull())
                          .select("wave", "partner", _opposite(F.col("gender")).alias("_pg")))
             .where(F.col("wave").isNotNull() & F.col("partner").isNotNull() & F.col("_pg").isNotNull())
             .distinct())
    unnamed = (good.where(F.col("pid").isNull() & F.col("wave").isNotNull() & F.col("partner").isNotNull())
               .withColumn("_pg", _opposite(F.col("gender")))
               .join(known, ["wave", "partner", "_pg"], "left_anti")
               .withColumn("_name", F.concat_ws(":", F.lit("speeddating:wave"), "wave", F.lit("partner"), "partner",
                                                F.lit("gender"), "_pg")))
    partner_only = partner_only.unionByName(_partner_persons(unnamed))

    persons = own.select(
        F.concat(F.lit("speeddating:iid:"), F.col("iid")).alias("_name"), "_pos",
        words(GENDER, F.col("gender")).alias("gender"), F.col("age").alias("_age_raw"),
        words(GOAL, F.col("goal")).alias("relationship_goal"),
        F.coalesce(words(FIELD, F.col("field_cd")), F.lower(F.col("field"))).alias("education_level"),
        F.coalesce(words(CAREER, F.col("career_c")), F.lower(F.col("career"))).alias("job_title"),
        _interests().alias("interests"),
        _attributes(F.col("race"), F.col("from"), F.col("zipcode"), F.col("income"),
                    [(c, F.col(f"i_{c}")) for c in INTERESTS]).alias("attributes"),
        F.lit(False).alias("_partner_only"),
    ).unionByName(partner_only.select(
        "_name", "_pos",
        words(GENDER, F.col("gender")).alias("gender"), F.col("age_o").alias("_age_raw"),
        F.lit(None).cast("string").alias("relationship_goal"), F.lit(None).cast("string").alias("education_level"),
        F.lit(None).cast("string").alias("job_title"), F.lit(None).cast("array<string>").alias("interests"),
        _attributes(F.col("race_o"), *[F.lit(None).cast("string")] * 3, []).alias("attributes"),
        F.lit(True).alias("_partner_only")))

    profiles = persons.select(
        stable_uuid_col(F.col("_name")).alias("id"),
        F.lit(None).cast("timestamp").alias("created_at"),
        F.lit(True).alias("setup_complete"),
        "_age_raw",
        F.when(F.col("_age_raw").rlike(r"^[0-9]{1,3}$"), F.col("_age_raw").try_cast("int")).alias("age"),
        "gender",
        F.lit("straight").alias("sexual_orientation"),
        "relationship_goal", "education_level", "job_title", "interests", "attributes", "_pos",
        F.lit(None).cast("string").alias(CORRUPT),
        "_partner_only",
    )
    malformed = rows.where(~ok).select(
        F.coalesce(F.col(CORRUPT), F.concat(F.lit("iid is not a whole number: "),
                                            F.coalesce(F.col("_iid_raw"), F.lit("(empty)")))).alias(CORRUPT), "_pos")
    profiles = profiles.unionByName(malformed, allowMissingColumns=True)

    interactions = _interactions(good)

    figures = profiles.agg(
        F.count(F.when(F.col(CORRUPT).isNull(), 1)).alias("persons"),
        F.count(F.when(F.col("_partner_only"), 1)).alias("only_partner"),
        F.count(F.col(CORRUPT)).alias("malformed")).first()
    rowfig = good.agg(F.count(F.when(F.col("pid").isNull(), 1)).alias("no_pid"),
                      F.count(F.when(F.col("pid").isNotNull() & ~F.coalesce(F.col("dec").isin("0", "1"), F.lit(False)),
                                     1)).alias("no_dec")).first()
    # Partner-only persons take the opposite gender: true when every date paired a man and a woman.
    same_gender = (good.join(own.select(F.col("iid").alias("pid"), F.col("gender").alias("_pg")), "pid")
                   .where(F.col("gender") == F.col("_pg")).count())
    info = {"persons": figures["persons"], "persons_only_as_partner": figures["only_partner"],
            "rows_without_pid": rowfig["no_pid"], "rows_without_decision": rowfig["no_dec"],
            "malformed_rows": figures["malformed"], "same_gender_dates": same_gender}
    return SourceRows(profiles=profiles.drop("_partner_only"), music=None, interactions=interactions,
                      keep_corrupt_text=True, complete=True, info=info)


def _opposite(gender):
    from pyspark.sql import functions as F
    return F.when(gender == "0", F.lit("1")).when(gender == "1", F.lit("0"))


def _partner_persons(rows):
    """One row per ``_name`` from the rows where that person is the partner: _name, _pos,
    gender (the opposite of the people they met, null if those disagree), age_o, race_o."""
    from pyspark.sql import functions as F

    def first_known(c):
        # The value of the earliest row that has one.
        return F.min_by(F.col(c), F.when(F.col(c).isNotNull(), F.col("_pos")))

    g = _opposite(F.col("gender"))
    return (rows.groupBy("_name")
            .agg(F.min("_pos").alias("_pos"), F.min(g).alias("g_lo"), F.max(g).alias("g_hi"),
                 first_known("age_o").alias("age_o"), first_known("race_o").alias("race_o"))
            .select("_name", "_pos", F.when(F.col("g_lo") == F.col("g_hi"), F.col("g_lo")).alias("gender"),
                    "age_o", "race_o"))


def _interests():
    """The activities rated INTEREST_MIN or more, in codebook order; null when none was rated."""
    from pyspark.sql import functions as F
    ratings = [F.col(f"i_{c}").try_cast("double") for c in INTERESTS]
    liked = F.filter(F.array(*[F.when(r >= INTEREST_MIN, F.lit(c)) for c, r in zip(INTERESTS, ratings)]),
                     lambda x: x.isNotNull())
    return F.when(F.coalesce(*ratings).isNotNull(), liked)


def _attributes(race, origin, zipcode, income, ratings):
    """map<string,string>: race (codebook words), from, zipcode (5 digits, "0" = none),
    income (no thousands separators) and the raw interest ratings; null values left out."""
    from pyspark.sql import functions as F
    zip_digits = F.regexp_replace(zipcode, ",", "")
    entries = [("race", F.element_at(F.create_map(*[F.lit(x) for kv in RACE.items() for x in kv]), race)),
               ("from", origin),
               ("zipcode", F.when(zip_digits.rlike("^[0-9]{1,5}$") & (zip_digits.try_cast("int") > 0),
                                  F.lpad(zip_digits, 5, "0"))),
               ("income", F.regexp_replace(income, ",", "")),
               *ratings]
    return F.map_from_entries(F.filter(
        F.array(*[F.struct(F.lit(k).alias("k"), v.cast("string").alias("v")) for k, v in entries]),
        lambda s: s["v"].isNotNull()))


def _interactions(good):
    """like/pass/match rows of the dates with a pid (see the module docstring)."""
    from pyspark.sql import functions as F
    dated = good.where(F.col("pid").isNotNull())
    reverse = dated.select(F.col("pid").alias("iid"), F.col("iid").alias("pid"))
    one_sided = dated.join(reverse, ["iid", "pid"], "left_anti")

    def events(df, who, whom, decision, slot):
        base = df.select(F.col(who).alias("_from"), F.col(whom).alias("_to"), F.col(decision).alias("_dec"),
                         "match", "_pos")
        verdict = F.when(F.col("_dec") == "1", F.lit("like")).when(F.col("_dec") == "0", F.lit("pass"))
        dec = base.select("_from", "_to", F.lit("dec").alias("_kind"), verdict.alias("event"),
                          (F.col("_pos") * 4 + slot).alias("_pos"))
        match = base.where(F.col("match") == "1").select(
            "_from", "_to", F.lit("match").alias("_kind"), F.lit("match").alias("event"),
            (F.col("_pos") * 4 + slot + 1).alias("_pos"))
        return dec.where(F.col("event").isNotNull()).unionByName(match)

    out = events(dated, "iid", "pid", "dec", 0).unionByName(events(one_sided, "pid", "iid", "dec_o", 2))

    def user(c):
        return stable_uuid_col(F.concat(F.lit("speeddating:iid:"), F.col(c)))

    return out.select(
        stable_uuid_col(F.concat_ws(":", F.lit("speeddating"), "_kind", "_from", "_to")).alias("id"),
        user("_from").alias("user_id"), user("_to").alias("profile_id"), "event",
        F.lit(None).cast("timestamp").alias("created_at"), "_pos")
