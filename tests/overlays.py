"""Config overlays (a second --configfile on top of a base config): merge them as Snakemake does and check
that an overlay changes only how much is run, never how."""

from pathlib import Path

import yaml

# Key paths (lists of keys; "*" = any key) whose values the smoke overlay may change: how much, never how.
SMOKE_SIZE_KEYS = [
    ("tasks",),
    ("regimes", "*", "n_train"),
    ("regimes", "*", "n_val"),
    ("regimes", "*", "draws"),
    ("regimes", "*", "shots"),
    ("train", "epochs"),
    ("train", "seeds"),
    ("strategies", "*", "grid", "*"),
    ("tables", "*", "tasks"),
    ("analyses", "*", "tasks"),
    ("analyses", "*", "quadrant_tasks"),
    ("analyses", "fid", "n_reference"),
    ("analyses", "fid", "repeats"),
    ("analyses", "attribution", "n_images"),
    ("analyses", "*", "more_tasks"),
    ("analyses", "tsne", "n_images"),
    ("analyses", "attribution", "ig_steps"),
]


def merged(*paths):
    def merge(base, extra):
        for key, value in extra.items():
            base[key] = merge(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
        return base

    config = {}
    for path in paths:
        config = merge(config, yaml.safe_load(Path(path).read_text()))
    return config


def leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, node


def is_size_key(path, size_keys) -> bool:
    return any(
        len(path) == len(pattern) and all(p in ("*", k) for p, k in zip(pattern, path))
        for pattern in size_keys
    )


def size_changes(base: dict, overlaid: dict, size_keys) -> list[tuple]:
    """The leaves an overlay changes (flattened configs), after asserting that they are all size keys."""
    assert set(overlaid) == set(base), "the overlay adds or removes keys"
    changed = sorted(path for path in base if base[path] != overlaid[path])
    assert changed, "the overlay changes nothing"
    assert [p for p in changed if not is_size_key(p, size_keys)] == []
    return changed
