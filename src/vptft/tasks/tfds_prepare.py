"""Preparing the VTAB-1k TFDS builders: what a builder needs before it starts (Python modules, manually
downloaded files), what it fetches (from the checksums TFDS ships), and errors that say what to do.

Checks run before `download_and_prepare`, so a missing TensorFlow or Kaggle archive is reported at once rather
than after hours of downloading.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Every TFDS builder here encodes or serialises with TensorFlow while preparing (dmlab and sun397 also decode
# with it); training only reads the prepared files through `tfds.data_source` and never needs it.
NEEDS_MODULES = {
    "sun397": ["cv2"],
    "diabetic_retinopathy_detection": ["cv2"],
    "kitti": ["cv2"],
    "patch_camelyon": ["h5py"],
    "dsprites": ["h5py"],
    "oxford_flowers102": ["scipy"],
    "svhn_cropped": ["scipy"],
}
PIP_NAME = {"tensorflow": "tensorflow-cpu", "cv2": "opencv-python-headless"}
INSTALL_HINT = (
    "run the data jobs with `snakemake --sdm conda` (envs/data.yaml has them) or `pip install -e '.[data]'`"
)


@dataclass(frozen=True)
class ManualStep:
    """Files TFDS expects in its manual_dir, and how to get them."""

    paths: tuple[str, ...]  # relative to manual_dir
    how: str


MANUAL = {
    "diabetic_retinopathy_detection": ManualStep(
        ("train", "test", "sample", "trainLabels.csv"),
        "download the 'diabetic-retinopathy-detection' competition files from Kaggle "
        "(https://www.kaggle.com/c/diabetic-retinopathy-detection/data; accept the rules first) and unpack them "
        "into {manual_dir}: train.zip.001-005 -> train/, test.zip.001-007 -> test/, sample.zip -> sample/, "
        "trainLabels.csv.zip -> trainLabels.csv",
    ),
    "imagenet2012": ManualStep(
        ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
        "register at https://image-net.org/download-images and download the ILSVRC2012 training and validation "
        "archives (ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar) into {manual_dir}",
    ),
    "resisc45": ManualStep(
        ("NWPU-RESISC45",),
        "download NWPU-RESISC45.rar (the authors' OneDrive link in TFDS's instructions: "
        "https://1drv.ms/u/s!AmgKYzARBl5ca3HNaHIlzp_IXjs) and extract it into {manual_dir}, so that "
        "{manual_dir}/NWPU-RESISC45/<class>/<image>.jpg exist",
    ),
}


def family(builder_spec: str) -> str:
    """'diabetic_retinopathy_detection/btgraham-300:3.*.*' -> 'diabetic_retinopathy_detection'."""
    return builder_spec.split(":")[0].split("/")[0]


def tfds_dir(data_dir) -> Path:
    return Path(data_dir) / "tfds"


def manual_dir(data_dir) -> Path:
    return tfds_dir(data_dir) / "downloads" / "manual"


def missing_modules(builder_spec: str) -> list[str]:
    needed = ["tensorflow", "importlib_resources", *NEEDS_MODULES.get(family(builder_spec), [])]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def missing_manual_files(builder_spec: str, data_dir) -> list[Path]:
    step, root = MANUAL.get(family(builder_spec)), manual_dir(data_dir)
    return [root / p for p in (step.paths if step else ()) if not (root / p).exists()]


def check_ready(task_name: str, builder_spec: str, data_dir) -> None:
    """Raise, naming what to install or place where, if preparing this builder cannot succeed."""
    modules = missing_modules(builder_spec)
    if modules:
        packages = ", ".join(PIP_NAME.get(m, m) for m in modules)
        raise RuntimeError(
            f"{task_name}: preparing TFDS {builder_spec} needs {packages} (not installed here); "
            + INSTALL_HINT
            + ". Training does not need them."
        )
    missing = missing_manual_files(builder_spec, data_dir)
    if missing:
        how = MANUAL[family(builder_spec)].how.format(manual_dir=manual_dir(data_dir))
        raise RuntimeError(
            f"{task_name}: TFDS cannot download {family(builder_spec)} by itself; missing "
            + ", ".join(map(str, missing))
            + f". To fix: {how}; then rerun the download job."
        )


def explain_failure(task_name: str, builder_spec: str, data_dir, err: Exception) -> str | None:
    """A message saying what to do for the failures we know, or None to let the original error through."""
    import requests

    if isinstance(err, requests.exceptions.ConnectionError):
        return (
            f"{task_name}: could not download TFDS {builder_spec} ({err.__class__.__name__}: {err}). This "
            f"machine cannot reach the dataset's host: run the download job where there is network, or copy "
            f"a prepared {tfds_dir(data_dir)}/{family(builder_spec)}/ here and rerun."
        )
    if family(builder_spec) == "sun397" and "could not be decoded" in str(err):
        return (
            f"{task_name}: an image in SUN397.tar.gz could not be decoded ({err}). TFDS already skips the "
            f"archive's known bad images, so the archive is damaged: delete "
            f"{tfds_dir(data_dir)}/downloads/*SUN397* and rerun the download job (TFDS checks the sha256 of "
            f"the new download)."
        )
    return None


@dataclass(frozen=True)
class DownloadPlan:
    builder: str
    urls: tuple[str, ...]
    bytes: int  # sum of the registered sizes of `urls`
    manual: bool


class _Planned(Exception):
    pass


class _RecordingDownloads:
    """Stands in for tfds.download.DownloadManager: records the first download request, then stops."""

    def __init__(self, manual: Path):
        self.manual_dir = manual
        self.urls: list[str] = []

    def _record(self, request, *args, **kwargs):
        from tensorflow_datasets.core.download.resource import Resource

        def walk(item):
            if isinstance(item, dict):
                item = list(item.values())
            if isinstance(item, (list, tuple)):
                for child in item:
                    walk(child)
            else:
                self.urls.append(item.url if isinstance(item, Resource) else str(item))

        walk(request)
        raise _Planned

    download = download_and_extract = _record

    def __getattr__(self, name):  # extract, iter_archive, ...: nothing more to learn
        raise _Planned


@contextlib.contextmanager
def no_tfds_litter():
    """TFDS fetches the metadata of a builder whose data it does not find into a fresh /tmp/tmp*tfds folder and
    never removes it (offline it stays empty, one per call): inside this block such folders go to a scratch
    folder that is removed."""
    before = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="vptft-tfds-") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = before


def tfds_builder(builder_spec: str, **kwargs):
    import tensorflow_datasets as tfds

    with no_tfds_litter():
        return tfds.builder(builder_spec, **kwargs)


def download_plan(builder_spec: str, scratch_dir) -> DownloadPlan:
    """What TFDS would fetch for this builder config, sized from the checksums shipped with TFDS (offline).

    Asks the builder's split generator for its downloads without fetching anything; manual data sets list only
    their automatic part (e.g. diabetic retinopathy's test labels)."""
    builder = tfds_builder(builder_spec, data_dir=str(scratch_dir))
    recorder = _RecordingDownloads(Path(scratch_dir) / "manual")
    manual = family(builder_spec) in MANUAL
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # resisc45 prints a TensorFlow banner here
            builder._split_generators(recorder)  # the only place TFDS names a config's downloads
    except _Planned:
        pass
    except Exception:  # a manual builder checks its files before asking for downloads
        if not manual:
            raise
    sizes = {str(url): info.size for url, info in (type(builder).url_infos or {}).items()}
    unknown = [u for u in recorder.urls if u not in sizes]
    if unknown:
        raise KeyError(f"TFDS {builder_spec}: no registered size for {unknown}")
    return DownloadPlan(builder_spec, tuple(recorder.urls), sum(sizes[u] for u in recorder.urls), manual)


def plan_table(plans: list[DownloadPlan], tasks_of: dict[str, list[str]], bandwidth_mb_s: float) -> str:
    """Markdown table of the downloads, with the total and its transfer time at the given bandwidth."""
    gib = 2**30
    lines = ["| TFDS builder | tasks | download (GiB) | manual step |", "|---|---|---:|---|"]
    for plan in sorted(plans, key=lambda p: -p.bytes):
        manual = (
            "yes: " + ", ".join(MANUAL[family(plan.builder)].paths) + " in manual_dir" if plan.manual else ""
        )
        lines.append(
            f"| {plan.builder} | {', '.join(tasks_of[plan.builder])} | {plan.bytes / gib:.2f} | {manual} |"
        )
    total = sum(p.bytes for p in plans)
    hours = total / (bandwidth_mb_s * 1e6) / 3600
    lines.append(
        f"\nTotal automatic download: {total / gib:.1f} GiB ({len(plans)} builders), about {hours:.1f} h "
        f"at {bandwidth_mb_s:g} MB/s. Sizes are the ones TFDS registers in its checksum files; manual "
        "archives are not registered there and come on top."
    )
    return "\n".join(lines)
