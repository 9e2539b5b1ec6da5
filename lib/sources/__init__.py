"""Sources of profiles, music preferences and interactions, each mapped to the lake's schema.

Every source returns a ``SourceRows``: unvalidated candidate rows that ``lib.ingest``
checks with the named rules of ``lib.validate``, quarantines where bad and upserts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SourceRows:
    """Candidate rows of one source read.

    profiles: any columns of ``schema.PROFILES_DDL`` (absent ones become null) plus
        ``_pos`` (long: input order; of rows sharing an id the first is kept),
        ``_age_raw`` (string: the age as written, null when absent) and
        ``_corrupt_record`` (string: the raw line when it could not be parsed, else null).
        A row with ``deleted_at`` set or ``banned`` true is an account to erase.
    music: id, created_at, user_id, genre, artist_name, ``_pos``; optional ``deleted_at``
        (a row to delete). None when the source has no music preferences.
    interactions: id, user_id (who acted), profile_id (on whom), event (one of
        ``schema.EVENTS``), created_at, ``_pos``; optional ``deleted_at``. None when the
        source has none.
    keep_corrupt_text: whether the text of an unparseable line may go to quarantine
        (not when the input may hold names or bios in any field).
    complete: the rows are the whole source (a file, a full read): ids of this source
        that the lake holds and the read does not were deleted upstream and are erased.
    info: figures the adapter wants in the ingest report (e.g. the new high-water mark).
    cached: DataFrames the adapter persisted; unpersisted when the ingest ends.
    """
    profiles: Any
    music: Any = None
    interactions: Any = None
    keep_corrupt_text: bool = True
    complete: bool = True
    info: dict = field(default_factory=dict)
    cached: list = field(default_factory=list)  # DataFrames the adapter persisted; ingest unpersists them


# Sources whose profiles carry no age: the age rules do not require one.
NO_AGE_SOURCES = ("lastfm",)


def read_source(spark, cfg, staging: str, since=None) -> SourceRows:
    """The candidate rows of the configured source (``since``: postgres high-water mark)."""
    kind, path = cfg.source.kind, cfg.source.path
    if kind == "synthetic":
        from lib.sources.synthetic import synthetic_rows
        return synthetic_rows(spark, cfg.source)
    if kind == "okcupid":
        from lib.sources.okcupid import okcupid_rows
        return okcupid_rows(spark, path, staging)
    if kind == "lastfm":
        from lib.sources.lastfm import read_lastfm
        return read_lastfm(spark, path, staging)
    if kind == "speeddating":
        from lib.sources.speeddating import read_speeddating
        return read_speeddating(spark, path, staging)
    if kind == "postgres":
        from lib.sources.postgres import read_postgres
        return read_postgres(spark, cfg.source, since)
    from lib.errors import UserError
    raise UserError(f"source.kind {kind!r} is not supported")
