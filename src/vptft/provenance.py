"""Which benchmark, backbone and config made a result file, written into the file itself.

The mini and the paper config write the same unqualified names (results/table2.csv, results/figure3.png, ...),
so a file's name and mtime cannot say whose it is; its stamp can, also after results are copied between
machines. CSV tables carry the stamp as trailing constant columns (index columns and pandas readers unchanged),
PNG figures as text chunks, Markdown reports as a first-line comment.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd

from vptft.io import content_hash

FIELDS = ("benchmark", "backbone", "config_hash")
_MARKDOWN_STAMP = re.compile(r"<!-- provenance (\{.*\}) -->")


def of_config(config: dict) -> dict:
    """The stamp of the files a config makes: config_hash = sha256 of the validated config (canonical JSON)."""
    return {"benchmark": config["benchmark"], "backbone": config["backbone"], "config_hash": content_hash(config)}


def with_columns(frame: pd.DataFrame, stamp: dict | None) -> pd.DataFrame:
    """`frame` with the stamp's fields as trailing columns (unchanged without a stamp)."""
    if not stamp:
        return frame
    if clash := [field for field in FIELDS if field in frame.columns]:
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

