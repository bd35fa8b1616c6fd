"""The grid and the selection rule, torch-free (the `select` job and the Snakefile use them cheaply).

Selection (docs/protocol.md#selection-and-seeds): the best LAST-epoch val top-1; ties go to the smaller
lr, then to the earlier grid point.
"""

from __future__ import annotations

import csv
import itertools
import math

from vptft.io import atomic_path

GRID_KEYS_FIRST = ("lr", "wd")  # grid points list these first, then the strategy's own keys in config order


def grid_points(grid: dict) -> list[dict]:
    """Every combination of the grid's lists, lr and wd first, then the strategy's extras in config order."""
    keys = [k for k in GRID_KEYS_FIRST if k in grid] + [k for k in grid if k not in GRID_KEYS_FIRST]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_size(grid: dict) -> int:
    return math.prod(len(values) for values in grid.values())


def chunk_indices(n_points: int, index: int, size: int | None) -> range:
    """Grid indices of sweep chunk `index` (all of them when size is None)."""
    if not size:
        return range(n_points)
    return range(index * size, min(n_points, (index + 1) * size))


def select(rows: list[dict]) -> dict:
    if not rows:
        raise ValueError("no sweep rows to select from")
    return min(rows, key=lambda r: (-float(r["val_top1"]), float(r["lr"]), int(r["grid_index"])))


def write_csv(path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge_sweep(chunk_csvs: list, out_csv, expected_points: int | None = None) -> dict:
    """Merge chunk CSVs into sweep.csv with a `selected` column; return the selected row."""
    rows = [row for path in chunk_csvs for row in read_csv(path)]
    if expected_points is not None and len(rows) != expected_points:
        raise ValueError(
            f"sweep chunks hold {len(rows)} grid points, expected {expected_points}: "
            f"{', '.join(map(str, chunk_csvs))}"
        )
    rows.sort(key=lambda r: int(r["grid_index"]))
    best = select(rows)
    for row in rows:
        row["selected"] = int(row is best)
    write_csv(out_csv, rows)
    return best


def selected_point(sweep_csv, grid: dict) -> dict:
    """The selected grid point of a sweep.csv: the config grid's own point at the selected row's grid index (its
    values keep their config types; the CSV's text must name the same point, else the sweep is stale)."""
    rows = [r for r in read_csv(sweep_csv) if r.get("selected") == "1"]
    if len(rows) != 1:
        raise ValueError(
            f"{sweep_csv}: expected exactly one selected row, found {len(rows)}; rerun the sweep"
        )
    points, index = grid_points(grid), int(rows[0]["grid_index"])
    if index >= len(points) or any(str(value) != rows[0].get(key) for key, value in points[index].items()):
        raise ValueError(
            f"{sweep_csv}: selected row {rows[0]} is not grid point {index} of the configured grid "
            f"{grid}; the sweep is from another grid, rerun it"
        )
    return points[index]
