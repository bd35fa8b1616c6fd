"""Atomic file writes and content hashes: a killed job never leaves a file that looks finished."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def content_hash(obj) -> str:
    """sha256 of the canonical JSON form of `obj` (key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def write_json(path, obj, *, with_hash: bool = False) -> None:
    """Write `obj` as JSON atomically; with_hash adds a `sha256` of the rest of the content."""
    if with_hash:
        obj = {**obj, "sha256": content_hash({k: v for k, v in obj.items() if k != "sha256"})}
    write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def read_json(path, *, check_hash: bool = False) -> dict:
    """Read JSON; with check_hash verify the embedded `sha256` and name the file if it does not match."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: corrupt or truncated JSON ({err}); delete it and rerun the rule that makes it"
        ) from None
    if check_hash:
        stored = obj.get("sha256")
        actual = content_hash({k: v for k, v in obj.items() if k != "sha256"})
        if stored != actual:
            raise ValueError(
                f"{path}: content hash mismatch (stored {stored}, actual {actual}); "
                "the file was edited or corrupted - delete it and rerun the rule that makes it"
            )
    return obj


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def image_files(folder) -> list[Path]:
    """The image files (png / jpg / jpeg) under a folder, recursively, sorted; [] if it is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
