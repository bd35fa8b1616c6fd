import json

import pytest

from vptft import tasks
from vptft.splits import (
    build_manifest,
    non_test_pool,
    read_manifest,
    regime_names,
    regime_spec,
    write_manifest,
)

REGIMES = {"vtab1k": {"n_train": 160, "n_val": 40}, "scaling": {"n_train": [40, 80, 400, 800], "ratio": 4, "seed": 0},
           "oneshot": {"per_class": 1, "seed": 0}}


def _indices(manifest, split):
    return {(src, i) for src, idx in manifest["splits"][split].items() for i in idx}


def _manifest(prepared_mini, task, regime, regimes=REGIMES):
    data_dir, infos = prepared_mini
    return build_manifest(task, regime, regime_spec(regime, regimes), infos[task], data_dir)


def test_regime_names_and_specs():
    assert regime_names(REGIMES) == ["vtab1k", "oneshot", "scale40", "scale80", "scale400", "scale800"]
    assert regime_spec("scale400", REGIMES) == {"kind": "scaling", "n_train": 400, "n_val": 100, "seed": 0}
    with pytest.raises(ValueError, match="regime 'scale500' is not configured"):
        regime_spec("scale500", REGIMES)


@pytest.mark.parametrize("task", ["newshapes_src", "digits"])
def test_vtab1k_manifest_sizes_and_disjointness(prepared_mini, task, tmp_path):
    manifest = _manifest(prepared_mini, task, "vtab1k")
    train, val, trainval, test = (_indices(manifest, s) for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(trainval)) == (160, 40, 200)
    assert trainval == train | val
    assert not train & val and not trainval & test
    assert len(test) == prepared_mini[1][task]["split_sizes"]["test"]
    assert sum(manifest["class_counts"]["train"]) == 160
    write_manifest(tmp_path / "m.json", manifest)
    assert read_manifest(tmp_path / "m.json")["splits"] == json.loads(json.dumps(manifest["splits"]))


def test_paper_sized_vtab1k_on_mini(prepared_mini):
    regimes = {"vtab1k": {"n_train": 800, "n_val": 200}}
    manifest = _manifest(prepared_mini, "newshapes_src", "vtab1k", regimes)
    assert manifest["splits"]["val"] == {"train": list(range(800, 1000))}


def test_too_large_vtab1k_is_refused(prepared_mini):
    with pytest.raises(ValueError, match="only 200 exist"):
        _manifest(prepared_mini, "newshapes_src", "vtab1k", {"vtab1k": {"n_train": 160, "n_val": 300}})


def test_scaling_is_nested_at_4_to_1_and_never_touches_test(prepared_mini):
    previous = None
    for n in (40, 80, 400, 800):
        manifest = _manifest(prepared_mini, "digits", f"scale{n}")
        train, val, test = (_indices(manifest, s) for s in ("train", "val", "test"))
        assert (len(train), len(val)) == (n, n // 4)
        assert not train & val and not (train | val) & test
        assert test == _indices(_manifest(prepared_mini, "digits", "vtab1k"), "test")
        if previous:
            assert previous[0] <= train and previous[1] <= val  # larger sets contain the smaller ones
        previous = (train, val)


def test_scaling_size_the_task_cannot_supply_is_skipped_with_its_reason(prepared_mini, tmp_path):
    regimes = {"scaling": {"n_train": [1000], "ratio": 4, "seed": 0}}
    manifest = _manifest(prepared_mini, "digits", "scale1000", regimes)
    assert "has 1000 non-test records; 1000 train + 250 val need 1250" in manifest["skipped"]
    assert manifest["splits"]["train"] == {} and manifest["splits"]["test"]
    write_manifest(tmp_path / "m.json", manifest)
    with pytest.raises(ValueError, match="skipped for the task"):
        read_manifest(tmp_path / "m.json")


def test_oneshot_is_one_per_class_and_deterministic(prepared_mini):
    manifest = _manifest(prepared_mini, "digits", "oneshot")
    assert manifest["class_counts"]["train"] == [1] * 10 and manifest["class_counts"]["val"] == [1] * 10
    assert manifest["missing_classes"] == {"train": [], "val": []}
    assert not _indices(manifest, "train") & _indices(manifest, "val")
    assert manifest["splits"] == _manifest(prepared_mini, "digits", "oneshot")["splits"]


def test_oneshot_reports_a_class_without_records(prepared_mini, monkeypatch):
    real = tasks.load_labels

    def without_class_3(task, split, data_dir, indices=None):
        labels = real(task, split, data_dir, indices).copy()
        labels[labels == 3] = 4
        return labels

    monkeypatch.setattr(tasks, "load_labels", without_class_3)
    manifest = _manifest(prepared_mini, "digits", "oneshot")
    assert manifest["missing_classes"] == {"train": [3], "val": [3]}


def test_non_test_pool_excludes_a_test_slice_inside_train():
    eurosat = tasks.get_task("eurosat")  # test = train[21600:]
    pool = non_test_pool(eurosat, {"train": 27000})
    assert len(pool) == 21600 and max(i for _, i in pool) == 21599


def test_corrupt_manifest_is_refused(prepared_mini, tmp_path):
    path = tmp_path / "m.json"
    write_manifest(path, _manifest(prepared_mini, "digits", "vtab1k", {"vtab1k": {"n_train": 16, "n_val": 8}}))
    edited = json.loads(path.read_text())
    edited["splits"]["train"]["train"][0] = 900  # a val record leaks into train
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="hash mismatch"):
        read_manifest(path)
    path.write_text(path.read_text()[:50])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_manifest(path)
