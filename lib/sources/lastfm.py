"""Last.fm adapter: the HetRec 2011 Last.fm 2K folder into profiles, music preferences and
friendships.

The folder holds five tab-separated files with a header line: ``user_artists.dat``
(userID, artistID, weight), ``artists.dat`` (id, name, ...; UTF-8), ``tags.dat`` (tagID,
tagValue; latin-1), ``user_taggedartists.dat`` (userID, artistID, tagID, day, month, year)
and ``user_friends.dat`` (userID, friendID; each friendship is listed in both directions).

- profiles: one per userID found in any file. No genders, orientations, ages, names or
  bios exist in this source (the config turns the gender filter off). ``created_at`` is the
  user's earliest tagging date; ``attributes`` holds how many artists and friends they have.
- music preferences: one per line of ``user_artists.dat``; ``genre`` is the artist's
  genre: the genre tag that users applied to it most often (ties: the smaller tagID).
- interactions: one ``match`` per line of ``user_friends.dat``, from userID to friendID.

Ids are uuid5 of names such as ``lastfm:user:<userID>``: the same folder gives the same ids
on every run.
"""
from __future__ import annotations

import os

from lib.errors import UserError
from lib.ids import stable_uuid_col
from lib.sources import SourceRows
from lib.sources.files import CORRUPT, check_utf8, read_csv_with_position, read_header

# file -> (columns it must have, encoding)
FILES = {
    "user_artists.dat": (("userID", "artistID"), "UTF-8"),
    "artists.dat": (("id", "name"), "UTF-8"),
    "tags.dat": (("tagID", "tagValue"), "ISO-8859-1"),
    "user_taggedartists.dat": (("userID", "artistID", "tagID", "day", "month", "year"), "UTF-8"),
    "user_friends.dat": (("userID", "friendID"), "UTF-8"),
}

# Tags that say nothing about the genre, chosen from the ~250 most applied tags of the
# full file (lower-cased, trimmed): opinions and personal lists, moods, the singer's
# gender, instruments, nationalities, occasions and TV shows. Decades and years are
# matched by NON_GENRE_PATTERN. Everything else counts as a genre ("rock", "hip-hop",
# "soundtrack", "singer-songwriter", "latin", "j-pop", ...).
NON_GENRE_TAGS = frozenset({
    # opinions, personal lists
    "seen live", "favorites", "favourites", "favorite", "favourite", "favorite songs", "favourite songs",
    "fav artists", "albums i own", "love", "love it", "<3", "love at first listen", "awesome",
    "fucking awesome", "amazing", "beautiful", "brilliant", "genius", "legend", "perfect", "the best",
    "best song ever", "ultimate favorite", "cool", "nice", "lovely", "fantastic", "catchy", "addictive",
    "guilty pleasure", "guilty pleasures", "sexy", "hot", "cute", "sweet", "epic", "fun", "funny",
    # moods
    "sad", "happy", "mellow", "chill", "relax", "relaxing", "romantic", "melancholic", "melancholy",
    "dreamy", "dark", "emotional", "party", "summer", "rain", "memories",
    # voice, instruments, form
    "female vocalists", "male vocalists", "female vocalist", "male vocalist", "female", "male", "vocal",
    "diva", "guitar", "piano", "guitar virtuoso", "cover", "covers", "remix", "live", "ballad", "love songs",
    # nationalities and places
    "american", "british", "uk", "usa", "english", "german", "canadian", "french", "japanese", "swedish",
    "spanish", "russian", "polish", "italian", "brazilian", "brasil", "brazil", "icelandic", "australian",
    "finnish", "korean", "scottish", "irish", "turkish",
    # occasions, shows
    "christmas", "halloween", "disney", "gossip girl", "the vampire diaries", "american idol",
    "melrose place",
})
# Decades ("80s", "80's", "00s") and years ("2008").
NON_GENRE_PATTERN = r"^([0-9]0'?s|(19|20)[0-9]{2})$"
# Tagging dates before Last.fm existed (2002) are typing errors (the file has 1956, 1957, 1979).
EARLIEST_YEAR = 2002


def read_lastfm(spark, path: str, staging: str) -> SourceRows:
    """The Last.fm folder ``path`` as candidate rows (unvalidated; see ``SourceRows``).

    ``staging`` is not needed (the files are read in place). Lines that cannot be parsed
    (wrong number of fields, an id that is not a whole number) become profile rows with
    ``_corrupt_record`` set (``<file>: <line>``), so they reach quarantine. ``info``: users
    (profiles read), malformed_lines.
    """
    from pyspark.sql import functions as F

    headers = _checked_files(path)
    frames = {name: read_csv_with_position(spark, os.path.join(path, name), headers[name], sep="\t",
                                           encoding=enc, quote="")
              for name, (_, enc) in FILES.items()}

    def whole(c):
        # A whole number (ids, dates); null for anything else.
        v = F.trim(F.col(c))
        return F.when(v.rlike(r"^[0-9]{1,18}$"), v.try_cast("long"))

    parsed, bad = {}, []
    for name, (cols, _) in FILES.items():
        numeric = [c for c in cols if c not in ("name", "tagValue")]
        ok = F.col(CORRUPT).isNull()
        for c in numeric:
            ok = ok & whole(c).isNotNull()
        flagged = frames[name].withColumn("_ok", ok)
        parsed[name] = flagged.where("_ok").select(*[whole(c).alias(c) if c in numeric else F.col(c) for c in cols],
                                                   "_pos")
        text = F.coalesce(F.col(CORRUPT), F.concat_ws("\t", *[F.coalesce(F.col(c), F.lit("")) for c in cols]))
        bad.append(flagged.where(~F.col("_ok")).select(F.concat(F.lit(name + ": "), text).alias(CORRUPT), "_pos"))

    ua, ut, uf = parsed["user_artists.dat"], parsed["user_taggedartists.dat"], parsed["user_friends.dat"]

    def user_id(c):
        return stable_uuid_col(F.concat(F.lit("lastfm:user:"), F.col(c).cast("string")))

    # Profiles: every userID of any file.
    date = F.try_to_timestamp(F.format_string("%04d-%02d-%02d", "year", "month", "day"), F.lit("yyyy-MM-dd"))
    seen = (ua.select("userID", F.lit(1).alias("a"), F.lit(0).alias("f"), F.lit(None).cast("timestamp").alias("t"))
            .unionByName(uf.select("userID", F.lit(0).alias("a"), F.lit(1).alias("f"),
                                   F.lit(None).cast("timestamp").alias("t")))
            .unionByName(uf.select(F.col("friendID").alias("userID"), F.lit(0).alias("a"), F.lit(0).alias("f"),
                                   F.lit(None).cast("timestamp").alias("t")))
            .unionByName(ut.select("userID", F.lit(0).alias("a"), F.lit(0).alias("f"),
                                   F.when(F.col("year") >= EARLIEST_YEAR, date).alias("t"))))
    users = seen.groupBy("userID").agg(F.sum("a").alias("artists"), F.sum("f").alias("friends"),
                                       F.min("t").alias("created_at"))
    profiles = users.select(
        user_id("userID").alias("id"),
        F.col("created_at"),
        F.lit(True).alias("setup_complete"),
        F.lit(None).cast("int").alias("age"),
        F.lit(None).cast("string").alias("_age_raw"),
        F.create_map(F.lit("artists_listened"), F.col("artists").cast("string"),
                     F.lit("friends"), F.col("friends").cast("string")).alias("attributes"),
        F.col("userID").alias("_pos"),
        F.lit(None).cast("string").alias(CORRUPT),
    )
    bad_rows = bad[0]
    for b in bad[1:]:
        bad_rows = bad_rows.unionByName(b)
    profiles = profiles.unionByName(bad_rows, allowMissingColumns=True)

    # Music preferences: one per (user, artist) line, named by the artist's id.
    genres = artist_genres(parsed["user_taggedartists.dat"], parsed["tags.dat"])
    artists = parsed["artists.dat"].select(F.col("id").alias("artistID"), F.trim("name").alias("artist_name"))
    music = (ua.join(artists, "artistID", "left").join(genres, "artistID", "left")
             .select(stable_uuid_col(F.concat_ws(":", F.lit("lastfm:artist"), F.col("userID").cast("string"),
                                                 F.col("artistID").cast("string"))).alias("id"),
                     F.lit(None).cast("timestamp").alias("created_at"),
                     user_id("userID").alias("user_id"),
                     "genre",
                     F.when(F.col("artist_name") != "", F.col("artist_name")).alias("artist_name"),
                     "_pos"))

    # Friendships: the file lists both directions, so each line is one user's match.
    interactions = uf.select(
        stable_uuid_col(F.concat_ws(":", F.lit("lastfm:friend"), F.col("userID").cast("string"),
                                    F.col("friendID").cast("string"))).alias("id"),
        user_id("userID").alias("user_id"), user_id("friendID").alias("profile_id"),
        F.lit("match").alias("event"), F.lit(None).cast("timestamp").alias("created_at"), "_pos")

    counts = profiles.agg(F.count(F.when(F.col(CORRUPT).isNull(), 1)).alias("users"),
                          F.count(F.col(CORRUPT)).alias("bad")).first()
    info = {"users": counts["users"], "malformed_lines": counts["bad"]}
    return SourceRows(profiles=profiles, music=music, interactions=interactions, keep_corrupt_text=True,
                      complete=True, info=info)


def artist_genres(tagged, tags):
    """artistID, genre: the genre tag applied to the artist most often (over all users;
    ties: the smaller tagID). Artists with no genre tag are absent.

    tagged: userID, artistID, tagID rows; tags: tagID, tagValue rows.
    """
    from pyspark.sql import functions as F
    value = F.lower(F.trim(F.col("tagValue")))
    genre_tags = (tags.select("tagID", value.alias("genre"))
                  .where((F.col("genre") != "") & ~F.col("genre").isin(*sorted(NON_GENRE_TAGS))
                         & ~F.col("genre").rlike(NON_GENRE_PATTERN)))
    per_tag = (tagged.join(genre_tags, "tagID")
               .groupBy("artistID", "genre").agg(F.count("*").alias("n"), F.min("tagID").alias("tagID")))
    # The largest (count, -tagID) wins: most applied, then the smaller tagID.
    best = F.max(F.struct(F.col("n"), (-F.col("tagID")).alias("neg_tag"), F.col("genre")))
    return per_tag.groupBy("artistID").agg(best.alias("b")).select("artistID", F.col("b.genre").alias("genre"))


def _checked_files(path: str) -> dict:
    """{file name: its header}: the five files of the folder, each checked to exist, be
    readable and carry its columns (only header lines are read; UTF-8 files are streamed
    through a decoder)."""
    if not path or not os.path.exists(path):
        raise UserError(f"Last.fm folder {path!r} not found; set source.path to the folder holding "
                        f"{', '.join(FILES)}")
    if not os.path.isdir(path):
        raise UserError(f"{path!r} is not a folder; source.kind=lastfm needs source.path to be the folder "
                        f"holding {', '.join(FILES)}")
    missing = [n for n in FILES if not os.path.isfile(os.path.join(path, n))]
    if missing:
        raise UserError(f"Last.fm folder {path!r} lacks {', '.join(missing)}; it needs all of {', '.join(FILES)} "
                        "(the hetrec2011-lastfm-2k files, unzipped)")
    out = {}
    for name, (cols, encoding) in FILES.items():
        file = os.path.join(path, name)
        if not os.access(file, os.R_OK):
            raise UserError(f"{file!r} is not readable; check its permissions")
        if encoding == "UTF-8":
            check_utf8(file, file)
        header = read_header(file, sep="\t", encoding="utf-8-sig" if encoding == "UTF-8" else "latin-1")
        lacking = [c for c in cols if c not in header]
        if lacking:
            raise UserError(f"{file!r} lacks the column(s) {', '.join(lacking)} (found: {', '.join(header[:8])}); "
                            f"it must be tab-separated with a header line naming {', '.join(cols)}")
        out[name] = header
    return out
