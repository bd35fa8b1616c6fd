"""Which benchmark, backbone and config made a result file, written into the file itself.

The mini and the paper config write the same unqualified names (results/table2.csv, results/figure3.png, ...),
so a file's name and mtime cannot say whose it is; its stamp can, also after results are copied between
machines. CSV tables carry the stamp as trailing constant columns (index columns and pandas readers unchanged),
PNG figures as text chunks, Markdown reports as a first-line comment.
"""

from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import time
from pathlib import Path

from vptft.io import content_hash, file_sha256, write_json

FIELDS = ("benchmark", "backbone", "config_hash")
_MARKDOWN_STAMP = re.compile(r"<!-- provenance (\{.*\}) -->")


def of_config(config: dict) -> dict:
    """The stamp of the files a config makes: config_hash = sha256 of the validated config (canonical JSON)."""
    return {
        "benchmark": config["benchmark"],
        "backbone": config["backbone"],
        "config_hash": content_hash(config),
    }


def with_columns(frame, stamp: dict | None):
    """A pandas `frame` with the stamp's fields as trailing columns (unchanged without a stamp); this module
    imports no pandas, since the Snakefile imports it."""
    if not stamp:
        return frame
    if clash := [field for field in FIELDS if field in [*frame.columns, *frame.index.names]]:
        raise ValueError(f"the table already has columns {clash}; they would hide its provenance")
    return frame.assign(**{field: stamp[field] for field in FIELDS})


def markdown_header(stamp: dict | None) -> str:
    """The first line of a stamped Markdown file (a comment: rendered Markdown does not show it)."""
    return f"<!-- provenance {json.dumps(stamp, sort_keys=True)} -->\n" if stamp else ""


def read(path) -> dict | None:
    """The stamp of a result file (.csv, .png, .md), or None if it has none."""
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = csv.reader(f)
            values = dict(zip(next(rows, []), next(rows, [])))
    elif path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            values = dict(image.text)
    elif path.suffix == ".md":
        with open(path) as f:
            match = _MARKDOWN_STAMP.fullmatch(f.readline().strip())
        values = json.loads(match.group(1)) if match else {}
    else:
        raise ValueError(f"{path}: no provenance stamp for {path.suffix or 'extension-less'} files")
    stamp = {field: values.get(field) for field in FIELDS}
    return stamp if all(stamp.values()) else None


def describe(stamp: dict | None) -> str:
    if not stamp:
        return "a file without provenance"
    return f"{stamp['benchmark']} / {stamp['backbone']} / config {stamp['config_hash'][:12]}"


def note_foreign_copy(alias, source, note, stamp: dict | None = None) -> dict | None:
    """If `alias` exists and is not a byte copy of `source` (this config's file) - or, where `source` is not made
    yet, does not carry this config's `stamp` - write what it holds to `note`, newer than `alias`, and return it;
    else None.

    The rule copying `source` to `alias` takes `note` as input, so Snakemake re-makes the alias whatever the rerun
    triggers: a changed input file is noticed under `--rerun-triggers mtime` too, a missing one is not (an
    up-to-date job is not re-run for a missing intermediate file). The note's path stays the same, so the set of
    input files does not change between runs; its content (with the time) differs from any earlier note.
    """
    alias, source = Path(alias), Path(source)
    if not alias.is_file():
        return None
    if source.is_file() and filecmp.cmp(alias, source, shallow=False):
        return None
    try:
        found = read(alias)
    except (
        OSError,
        ValueError,
        UnicodeDecodeError,
        ImportError,
    ):  # damaged, or no PIL here: replaced all the same
        found = None
    if not source.is_file() and (stamp is None or found == stamp):
        return None  # this config's own file (or nothing to judge it by) while its source is not there
    content = {
        "alias": str(alias),
        "source": str(source),
        "found": found,
        "sha256": file_sha256(alias),
        "noted_at": time.time(),
    }
    write_json(note, content)
    noted = Path(note).stat().st_mtime
    if alias.stat().st_mtime >= noted:  # copied from a machine whose clock runs ahead: the note must be newer
        os.utime(alias, (noted - 1, noted - 1))
    return content
