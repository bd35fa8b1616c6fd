"""Preparing TFDS data: checks before any download, messages that say what to do, and the download plan read
from TFDS's own checksum files (offline)."""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import requests

from conftest import ROOT
from vptft import cli, tasks
from vptft.splits import build_manifest, regime_spec
from vptft.tasks import tfds_prepare, vtab

PAPER_BUILDERS = sorted({tasks.get_task(n).extra["builder"] for n in tasks.tasks_of("vtab")})


@pytest.fixture
def installed(monkeypatch):
    """Pretend the given modules are (not) importable, whatever this machine has."""

    def pretend(*missing):
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name: None if name in missing else real("json")
        )

    return pretend


@pytest.fixture
def no_download(monkeypatch):
    def refuse(task, data_dir):
        raise AssertionError("a TFDS builder was created although the checks should have stopped first")

    monkeypatch.setattr(vtab, "_builder", refuse)


def test_missing_tensorflow_is_reported_before_anything_is_downloaded(installed, no_download, tmp_path):
    installed("tensorflow")
    with pytest.raises(
        RuntimeError, match=r"dmlab: preparing TFDS dmlab:2\.0\.1 needs tensorflow-cpu .*\.\[data\]"
    ):
        vtab.prepare(tasks.get_task("dmlab"), str(tmp_path))
    assert not (tmp_path / "tfds").exists()


def test_builder_specific_modules_are_named(installed):
    installed("cv2", "h5py")
    assert tfds_prepare.missing_modules("sun397/tfds:4.*.*") == ["cv2"]
    assert tfds_prepare.missing_modules("dsprites:2.*.*") == ["h5py"]
    assert tfds_prepare.missing_modules("cifar100:3.*.*") == []


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "resisc45",
            r"missing .*manual/NWPU-RESISC45\. To fix: download NWPU-RESISC45\.rar .*extract it into ",
        ),
        (
            "diabetic_retinopathy",
            (
                r"missing .*manual/train, .*manual/test, .*manual/sample, .*manual/trainLabels\.csv\. "
                r"To fix: download .*kaggle\.com/c/diabetic-retinopathy-detection"
            ),
        ),
    ],
)
def test_manual_dataset_names_each_missing_file_and_how_to_get_it(
    installed, no_download, tmp_path, name, expected
):
    installed()
    with pytest.raises(RuntimeError, match=expected):
        vtab.prepare(tasks.get_task(name), str(tmp_path))


def test_manual_files_in_place_pass_the_check(installed, tmp_path):
    installed()
    spec = tasks.get_task("diabetic_retinopathy").extra["builder"]
    manual = tfds_prepare.manual_dir(tmp_path)
    for path in ("train", "test", "sample"):
        (manual / path).mkdir(parents=True)
    assert tfds_prepare.missing_manual_files(spec, tmp_path) == [manual / "trainLabels.csv"]
    (manual / "trainLabels.csv").write_text("image,level\n")
    tfds_prepare.check_ready("diabetic_retinopathy", spec, tmp_path)


class FailingBuilder:
    def __init__(self, error):
        self.error = error

    def download_and_prepare(self, download_config=None):
        raise self.error


@pytest.mark.parametrize(
    "name, error, expected",
    [
        (
            "sun397",
            ValueError("Invalid JPEG data. Image /c/church/sun_x.jpg could not be decoded by Tensorflow."),
            r"sun397: an image in SUN397\.tar\.gz could not be decoded .*delete .*downloads/\*SUN397\*",
        ),
        (
            "dtd",
            requests.exceptions.ConnectionError("Failed to resolve 'www.robots.ox.ac.uk'"),
            r"dtd: could not download TFDS dtd:3\.\*\.\* .*cannot reach the dataset's host",
        ),
    ],
)
def test_known_preparation_failures_say_what_to_do(installed, monkeypatch, tmp_path, name, error, expected):
    installed()
    monkeypatch.setattr(vtab, "_builder", lambda task, data_dir: FailingBuilder(error))
    with pytest.raises(RuntimeError, match=expected):
        vtab.prepare(tasks.get_task(name), str(tmp_path))


def test_unknown_preparation_failures_pass_through(installed, monkeypatch, tmp_path):
    installed()
    monkeypatch.setattr(vtab, "_builder", lambda task, data_dir: FailingBuilder(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        vtab.prepare(tasks.get_task("dtd"), str(tmp_path))


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("plan")
    return {spec: tfds_prepare.download_plan(spec, scratch) for spec in PAPER_BUILDERS}


def test_download_plan_of_every_builder_from_tfds_checksums(plans):
    assert len(plans) == 16
    for spec, plan in plans.items():
        if spec.startswith("resisc45"):
            assert plan.manual and plan.urls == ()  # everything comes from the manual archive
        else:
            assert plan.urls and plan.bytes > 0, spec
    # only the RGB archive of EuroSAT, not the 13-band one registered beside it
    assert [u.rsplit("/", 1)[-1] for u in plans["eurosat/rgb:2.*.*"].urls] == ["EuroSAT.zip"]
    assert 17e9 < plans["clevr:3.*.*"].bytes < 20e9  # CLEVR_v1.0.zip, 18 GB in TFDS's catalog
    assert 70 * 2**30 < sum(p.bytes for p in plans.values()) < 100 * 2**30


def test_data_plan_command_prints_the_table(capsys):
    cli.main(["data-plan", "--config", f"{ROOT}/config/paper.yaml", "--bandwidth", "10"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "TFDS builder" not in line]
    assert len(rows) == 19  # 16 VTAB builders + 3 FGVC (NABirds has none)
    assert "| clevr:3.*.* | clevr_count, clevr_distance |" in out
    assert "NWPU-RESISC45 in manual_dir" in out
    assert "at 10 MB/s" in out


def test_data_plan_of_the_mini_config_needs_no_download(capsys):
    cli.main(["data-plan", "--config", f"{ROOT}/config/config.yaml"])
    assert "no TFDS tasks" in capsys.readouterr().out


def test_prepared_data_info_records_sizes(installed, monkeypatch, tmp_path):
    installed()

    class Split:
        num_examples = 3

    class Info:
        full_name, download_size, dataset_size, splits = "dtd/3.0.1", 10, 20, {"train": Split()}

    class Builder:
        info, data_dir = Info(), str(tmp_path)

        def download_and_prepare(self, download_config=None):
            pass

    monkeypatch.setattr(vtab, "_builder", lambda task, data_dir: Builder())
    info = vtab.prepare(tasks.get_task("dtd"), str(tmp_path))
    assert json.loads(json.dumps(info))["prepared_bytes"] == 20 and info["download_bytes"] == 10


WITHOUT_TENSORFLOW = """
import importlib.util, json, sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Hide())
real_find_spec = importlib.util.find_spec  # TFDS and etils ask find_spec whether TensorFlow exists
importlib.util.find_spec = lambda n, p=None: None if n.split(".")[0] == "tensorflow" else real_find_spec(n, p)
from vptft import tasks
from vptft.tasks import vtab
task = tasks.get_task("resisc45")
images, labels = vtab.load_images(task, "train", range(6), sys.argv[1])
assert (vtab.load_labels(task, "train", sys.argv[1]) == labels).all()
print(json.dumps({"labels": labels.tolist(), "pixels": int(images[0].sum()),
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def _require_tensorflow():
    if importlib.util.find_spec("tensorflow") is None:
        reason = "preparing TFDS data needs the data extra (pip install -e '.[data]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the data extra: {reason}")
        pytest.skip(reason)


def test_real_tfds_preparation_of_resisc45_from_its_manual_folder(tmp_path):
    """The one VTAB builder that needs no network: TFDS builds resisc45 from NWPU-RESISC45/<class>/*.jpg. A fake
    folder goes through the real download_and_prepare (TensorFlow encoding, array_record files), then is read back
    through tfds.data_source by the task's loader: decoded pixels and labels match what was written."""
    _require_tensorflow()
    from PIL import Image

    task = tasks.get_task("resisc45")
    classes = vtab._builder(task, str(tmp_path)).info.features["label"].names
    root = tfds_prepare.manual_dir(tmp_path) / "NWPU-RESISC45"
    written = {}
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes[:3]):
        (root / name).mkdir(parents=True)
        for i in range(2):
            colour = rng.integers(0, 256, size=3)
            Image.fromarray(np.full((256, 256, 3), colour, dtype=np.uint8)).save(
                root / name / f"{name}_{i}.jpg", quality=100
            )
            written[f"{name}_{i}.jpg"] = (label, colour)
    info = vtab.prepare(task, str(tmp_path))
    assert info["split_sizes"] == {"train": 6} and info["source"] == "tfds resisc45/3.0.0"
    assert info["prepared_bytes"] > 0
    source = vtab.data_source(task, "train", str(tmp_path))
    images, labels = vtab.load_images(task, "train", range(6), str(tmp_path))
    for record, image, label in zip((source[i] for i in range(6)), images, labels, strict=True):
        want_label, colour = written[record["filename"].decode()]
        assert label == want_label
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - colour).max() <= 3  # JPEG of a flat colour
    again = vtab.prepare(task, str(tmp_path))  # prepared once; a second job finds it ready
    assert again["split_sizes"] == info["split_sizes"]
    fewshot = {"fewshot": {"shots": [1], "draws": 1, "prototype": False, "seed": 0}}
    oneshot = build_manifest(
        "resisc45", "fewshot1_draw0", regime_spec("fewshot1_draw0", fewshot), info, str(tmp_path)
    )
    assert oneshot["class_counts"]["train"] == [1, 1, 1] + [0] * 42 == oneshot["class_counts"]["val"]
    assert oneshot["missing_classes"] == {"train": list(range(3, 45)), "val": list(range(3, 45))}
    # training reads the prepared files without TensorFlow (hidden here as if not installed)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "labels": labels.tolist(),
        "pixels": int(images[0].sum()),
        "tensorflow_imported": False,
    }


def test_a_builder_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """TFDS fetches an unprepared builder's metadata into a fresh tmp*tfds folder and keeps it; ours go away."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    import tensorflow_datasets as tfds

    tfds.builder("resisc45", data_dir=str(tmp_path / "plain"))
    assert list(system_tmp.glob("tmp*tfds")), "TFDS no longer litters: tfds_builder can go"
    for leftover in system_tmp.iterdir():
        leftover.rmdir()
    builder = tfds_prepare.tfds_builder("resisc45", data_dir=str(tmp_path / "ours"))
    assert builder.name == "resisc45"
    assert not list(system_tmp.iterdir())
    assert tempfile.tempdir == str(system_tmp)
