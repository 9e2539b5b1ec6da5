"""Stable ids: the same input row gets the same uuid on every run, in Spark and in Python."""
from __future__ import annotations

import uuid

# Namespace of this project's name-based (version 5) uuids.
NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4c1e-9a57-3b1f0d2c9e41")


def stable_uuid(name: str) -> str:
    """uuid5(NAMESPACE, name) as a string; ``stable_uuid_col`` is its Spark twin."""
    return str(uuid.uuid5(NAMESPACE, name))


def stable_uuid_col(name_col):
    """Spark Column: the same value as ``stable_uuid`` for each string in ``name_col``.

    uuid5 is sha1(namespace bytes + name) with the version nibble set to 5 and the
    variant bits to 10xx (RFC 4122).
    """
    from pyspark.sql import functions as F
    h = F.sha1(F.concat(F.unhex(F.lit(NAMESPACE.hex)), F.encode(name_col, "UTF-8")))
    variant = F.lower(F.hex((F.conv(F.substring(h, 17, 1), 16, 10).cast("int") % 4) + 8))
    return F.concat_ws("-", F.substring(h, 1, 8), F.substring(h, 9, 4),
                       F.concat(F.lit("5"), F.substring(h, 14, 3)),
                       F.concat(variant, F.substring(h, 18, 3)), F.substring(h, 21, 12))


def hash_key_col(col):
    """Spark Column: a 64-bit integer key for a string id (for masking duplicates in a batch)."""
    from pyspark.sql import functions as F
    return F.xxhash64(col)
