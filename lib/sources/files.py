"""Reading exported files: zip or plain CSV, every row kept with its position in the file."""
from __future__ import annotations

import codecs
import csv
import io
import os
import shutil
import zipfile
import zlib

from lib.errors import UserError

CORRUPT = "_corrupt_record"


def stage_csv(path: str, staging: str, encoding: str = "utf-8") -> str:
    """Return a plain CSV path for ``path``: itself, or its single CSV member unzipped into
    ``staging`` (streamed, never held in memory). Spark cannot split a zip, a CSV it can.
    A UTF-8 file is checked to be UTF-8 throughout; a file in a single-byte ``encoding``
    (e.g. latin-1) has no invalid bytes to check."""
    if not os.path.exists(path):
        raise UserError(f"input file {path!r} not found; check source.path")
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UserError(f"input {path!r} is not a readable file; check source.path")
    if os.path.getsize(path) == 0:
        raise UserError(f"input file {path!r} is empty")
    with open(path, "rb") as f:
        looks_zipped = f.read(4) == b"PK\x03\x04"
    if not looks_zipped and not zipfile.is_zipfile(path):
        if _is_utf8(encoding):
            check_utf8(path, path)
        return os.path.abspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if m.filename.lower().endswith(".csv") and not m.is_dir()]
            if len(members) != 1:
                raise UserError(f"zip file {path!r} must hold exactly one .csv file, found {len(members)}")
            out = os.path.join(staging, os.path.basename(members[0].filename))
            with z.open(members[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise UserError(f"zip file {path!r} cannot be read ({e}); re-export or re-download it") from None
    if _is_utf8(encoding):
        check_utf8(out, path)
    return out


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def check_utf8(path: str, shown: str) -> None:
    """Refuse a file that is not UTF-8 anywhere in it (Spark would silently turn the bad
    bytes into U+FFFD). Streams the file: memory stays constant whatever its size."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line += chunk[:max(e.start, 0)].count(b"\n")
                raise UserError(f"{shown!r} is not UTF-8 text (first bad byte on line {line}); "
                                "export the CSV as UTF-8") from None
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(f"{shown!r} ends in the middle of a UTF-8 character; export the CSV as UTF-8") from None


def read_header(path: str, sep: str = ",", encoding: str = "utf-8-sig") -> list[str]:
    """The CSV's column names (only the first line is read; a UTF-8 byte order mark is skipped).
    ``sep``: the field separator (a tab for tab-separated files)."""
    with open(path, encoding=encoding, newline="") as f:
        first = f.readline()
    if not first.strip():
        raise UserError(f"{path!r} has no header line")
    header = [h.strip() for h in next(csv.reader(io.StringIO(first), delimiter=sep))]
    seen = {h for h in header if header.count(h) > 1}
    if seen:
        raise UserError(f"{path!r} has the column(s) {', '.join(sorted(seen))} more than once; "
                        "give each column one name")
    if any(h == "" for h in header):
        raise UserError(f"{path!r} has a column without a name in its header")
    return header


def read_csv_with_position(spark, path: str, columns: list[str], sep: str = ",", encoding: str = "UTF-8",
                           quote: str = '"'):
    """All columns as strings plus ``_corrupt_record`` and ``_pos`` (0-based data row number).

    The position is exact however Spark splits the file: rows are counted per file block
    (from the hidden ``_metadata`` column) and offset by the blocks before them.
    ``sep``, ``encoding``: of the file; ``quote``: "" where quotes are plain characters
    (tab-separated exports that never quote a field).
    """
    from pyspark.sql import functions as F

    ddl = ", ".join(f"`{c.replace('`', '``')}` string" for c in columns) + f", {CORRUPT} string"
    # columnPruning off: Spark checks a line's number of fields only when it parses all of
    # them, so a short or long line is flagged even where the caller uses a few columns.
    df = (spark.read.option("header", "true").option("mode", "PERMISSIVE")
          .option("columnPruning", "false").option("sep", sep).option("encoding", encoding).option("quote", quote)
          .option("columnNameOfCorruptRecord", CORRUPT).option("multiLine", "false")
          .option("enforceSchema", "true").schema(ddl).csv(path)
          .withColumn("_file", F.col("_metadata.file_path"))
          .withColumn("_block", F.col("_metadata.file_block_start"))
          .withColumn("_mono", F.monotonically_increasing_id()))
    # Within one block rows keep file order, and so does monotonically_increasing_id.
    # One row per file block reaches the driver (a handful per file, not per user).
    blocks = sorted((r["_file"], r["_block"], r["_n"], r["_first"]) for r in
                    df.groupBy("_file", "_block").agg(F.count("*").alias("_n"), F.min("_mono").alias("_first")).collect())
    offsets, total = [], 0
    for file, block, n, first in blocks:
        offsets.append((file, block, total - first))  # _pos = _mono + (rows before the block - first id)
        total += n
    shift = spark.createDataFrame(offsets, "_file string, _block long, _shift long")
    return (df.join(F.broadcast(shift), ["_file", "_block"])
            .withColumn("_pos", F.col("_mono") + F.col("_shift"))
            .drop("_file", "_block", "_mono", "_shift"))
