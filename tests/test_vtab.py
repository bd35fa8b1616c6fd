"""The 19 VTAB-1k definitions against `tfds.testing.mock_data` (no network, no TensorFlow): split slices and sizes,
class counts, label rules, 3-channel tiling, and every split regime on each task."""

import tempfile

import numpy as np
import pytest

from vptft import tasks
from vptft.splits import build_manifest, non_test_pool, pool_size, regime_spec
from vptft.tasks import tfds_prepare, vtab

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is a declared dependency")

SPLIT_SIZES = vtab.TFDS_SPLIT_SIZES  # the mock data sources have these lengths
TEST_SIZES = vtab.TEST_SIZES  # the VPT paper's data table, which the test slices must reproduce
VTAB = tasks.tasks_of("vtab")


def fake_record(family: str, index: int, num_classes: int, with_image: bool = True) -> dict:
    """A record with the fields the VTAB label rules read, in range, cycling through every class; the image only
    when the source decodes images (labels-only reads skip it, as TFDS's SkipDecoding does)."""
    record = {"label": index % num_classes}
    if with_image:
        channels = 1 if family in ("dsprites", "smallnorb") else 3
        high = 2 if family == "dsprites" else 256
        record["image"] = np.random.default_rng(index).integers(0, high, (12, 10, channels), dtype=np.uint8)
    if family == "dsprites":
        record.update(label_x_position=index % 32, label_orientation=index % 40)
    elif family == "smallnorb":
        record.update(label_azimuth=index % 18, label_elevation=index % 9)
    elif family == "clevr":
        n = 3 + index % 8
        z = np.full(n, 20.0)
        z[0] = [4.0, 8.25, 8.75, 9.25, 9.75, 12.0][index % 6]  # one object per distance bin
        record["objects"] = {"size": np.zeros(n), "pixel_coords": np.stack([np.zeros(n), np.zeros(n), z], 1)}
    elif family == "kitti":
        cases = [([0], [5.0]), ([1, 4], [15.0, 3.0]), ([2], [50.0]), ([3, 5], [1.0, 2.0])]  # bins 0, 1, 2, 3
        types, z = cases[index % 4]
        record["objects"] = {
            "type": np.array(types),
            "location": np.stack([np.zeros(len(z)), np.zeros(len(z)), np.array(z)], 1),
        }
    return record


class FakeSource:
    def __init__(self, family, split, num_classes, with_image=True):
        self.family, self.size, self.num_classes = family, SPLIT_SIZES[family][split], num_classes
        self.with_image = with_image

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return fake_record(self.family, index, self.num_classes, self.with_image)


@pytest.fixture
def mocked_tfds():
    vtab_tasks = map(tasks.get_task, VTAB)
    by_family = {tfds_prepare.family(t.extra["builder"]): t.num_classes for t in vtab_tasks}

    def as_data_source(builder, split, decoders=None, **kwargs):
        family = builder.name.split("/")[0]
        return FakeSource(family, split, by_family[family], with_image=not decoders)

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        yield


def _data_info(task):
    return {"source": f"mock {task.extra['builder']}", "split_sizes": vtab.catalog_split_sizes(task)}


def _indices(manifest, split):
    return {(src, i) for src, idx in manifest["splits"][split].items() for i in idx}


def test_nineteen_tasks_in_three_groups():
    groups = [tasks.get_task(t).group for t in VTAB]
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (7, 4, 8)


@pytest.mark.parametrize("name", VTAB)
def test_vtab1k_definition_on_mock_data(mocked_tfds, name, tmp_path):
    task = tasks.get_task(name)
    spec = regime_spec("vtab1k", {"vtab1k": {"n_train": 800, "n_val": 200}})
    manifest = build_manifest(name, "vtab1k", spec, _data_info(task), str(tmp_path))
    train, val, trainval, test = (_indices(manifest, s) for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(trainval), len(test)) == (800, 200, 1000, TEST_SIZES[name])
    assert not train & val and not trainval & test and trainval == train | val
    assert manifest["splits"]["train"] == {"train": list(range(800))}  # train800 = the first 800 records
    assert all(len(counts) == task.num_classes for counts in manifest["class_counts"].values())
    images, labels = tasks.load_images(task, task.train_split, range(5), str(tmp_path))
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    assert labels.min() >= 0 and labels.max() < task.num_classes


@pytest.mark.parametrize(
    "name", ["cifar100", "eurosat", "clevr_count", "smallnorb_azimuth", "dsprites_location"]
)
def test_scaling_and_oneshot_on_mock_data(mocked_tfds, name, tmp_path):
    task = tasks.get_task(name)
    regimes = {
        "scaling": {"n_train": [400, 800, 20000], "ratio": 4, "seed": 0},
        "fewshot": {"shots": [1], "draws": 1, "prototype": False, "seed": 0},
    }
    small, large = (
        build_manifest(name, r, regime_spec(r, regimes), _data_info(task), str(tmp_path))
        for r in ("scale400", "scale800")
    )
    assert (len(_indices(small, "train")), len(_indices(small, "val"))) == (400, 100)
    assert _indices(small, "train") <= _indices(large, "train") and _indices(small, "val") <= _indices(
        large, "val"
    )
    assert not (_indices(large, "trainval") & _indices(large, "test"))
    oneshot = build_manifest(
        name, "fewshot1_draw0", regime_spec("fewshot1_draw0", regimes), _data_info(task), str(tmp_path)
    )
    assert oneshot["class_counts"]["train"] == [1] * task.num_classes == oneshot["class_counts"]["val"]
    assert not _indices(oneshot, "trainval") & _indices(oneshot, "test")


@pytest.mark.parametrize("name", VTAB)
def test_pool_size_counts_the_non_test_records(name):
    task = tasks.get_task(name)
    sizes = vtab.catalog_split_sizes(task)
    assert pool_size(task, sizes) == len(non_test_pool(task, sizes))


def test_scaling_size_beyond_the_task_is_capped(mocked_tfds, tmp_path):
    task = tasks.get_task("kitti_distance")  # 6,770 non-test records
    regimes = {"scaling": {"n_train": [10000], "ratio": 4, "seed": 0}}
    manifest = build_manifest(
        "kitti_distance", "scale10000", regime_spec("scale10000", regimes), _data_info(task), str(tmp_path)
    )
    assert manifest["capped"] == {"requested": [10000, 2500], "available": 6770, "used": [5416, 1354]}
    assert (len(_indices(manifest, "train")), len(_indices(manifest, "val"))) == (5416, 1354)


def test_grey_images_are_tiled_to_three_channels_and_dsprites_scaled(mocked_tfds, tmp_path):
    images, _ = tasks.load_images(tasks.get_task("dsprites_orientation"), "train", [3], str(tmp_path))
    assert images[0].shape == (12, 10, 3) and set(np.unique(images[0])) <= {0, 255}
    np.testing.assert_array_equal(images[0][..., 0], images[0][..., 2])


def _clevr(z_values):
    z = np.asarray(z_values, dtype=float)
    return {"objects": {"size": np.zeros(len(z)), "pixel_coords": np.stack([0 * z, 0 * z, z], 1)}}


def test_label_rules_on_hand_made_records():
    assert vtab.clevr_count({"objects": {"size": [0] * 5}}) == 2  # 5 objects -> label 2
    assert vtab.clevr_count({"objects": {"size": [0] * 3}}) == 0
    assert vtab.clevr_distance(_clevr([9.2, 12.0])) == 3  # nearest 9.2 in (9.0, 9.5]
    assert vtab.clevr_distance(_clevr([8.0])) == 0  # exactly on a threshold: not above it
    assert vtab.clevr_distance(_clevr([8.0001])) == 1
    assert vtab.clevr_distance(_clevr([10.5, 30.0])) == 5
    kitti = {"objects": {"type": np.array([0, 3]), "location": np.array([[0, 0, 15.0], [0, 0, 2.0]])}}
    assert vtab.kitti_distance(kitti) == 1  # the pedestrian (type 3) at 2 m does not count
    no_vehicle = {"objects": {"type": np.array([4]), "location": np.array([[0, 0, 3.0]])}}
    assert vtab.kitti_distance(no_vehicle) == 3
    assert vtab.kitti_distance({"objects": {"type": np.array([2]), "location": np.array([[0, 0, 8.0]])}}) == 0
    x_bin, orient_bin = (
        tasks.get_task(n).extra["label"] for n in ("dsprites_location", "dsprites_orientation")
    )
    assert [x_bin({"label_x_position": v}) for v in (0, 1, 2, 31)] == [0, 0, 1, 15]
    assert [orient_bin({"label_orientation": v}) for v in (0, 2, 3, 39)] == [0, 0, 1, 15]
    assert tasks.get_task("smallnorb_elevation").extra["label"]({"label_elevation": 7}) == 7


def test_reading_records_leaves_no_temporary_folder(mocked_tfds, tmp_path, monkeypatch):
    """TFDS fetches the metadata of a builder it finds no data for (here: every mocked one) into a tmp*tfds
    folder it never removes; the loaders' go away (the test suite left ~140 of them in /tmp per run)."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    task = tasks.get_task("cifar100")
    images, labels = tasks.load_images(task, task.train_split, range(2), str(tmp_path))
    assert len(images) == len(labels) == 2
    assert not list(system_tmp.iterdir())
    assert tempfile.tempdir == str(system_tmp)
