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

REGIMES = {
    "vtab1k": {"n_train": 160, "n_val": 40},
    "scaling": {"n_train": [40, 80, 400, 800], "ratio": 4, "seed": 0},
    "fewshot": {"shots": [1, 5], "draws": 2, "prototype": True, "seed": 3},
}


def _indices(manifest, split):
    return {(src, i) for src, idx in manifest["splits"][split].items() for i in idx}


def _manifest(prepared_mini, task, regime, regimes=REGIMES):
    data_dir, infos = prepared_mini
    return build_manifest(task, regime, regime_spec(regime, regimes), infos[task], data_dir)


def test_regime_names_and_specs():
    assert regime_names(REGIMES) == [
        "vtab1k",
        "scale40",
        "scale80",
        "scale400",
        "scale800",
        "fewshot1_draw0",
        "fewshot1_draw1",
        "fewshot1_prototype",
        "fewshot5_draw0",
        "fewshot5_draw1",
        "fewshot5_prototype",
    ]
    assert regime_spec("scale400", REGIMES) == {
        "kind": "scaling",
        "n_train": 400,
        "n_val": 100,
        "ratio": 4,
        "seed": 0,
    }
    assert regime_spec("fewshot5_draw1", REGIMES) == {
        "kind": "fewshot",
        "per_class": 5,
        "selection": "draw",
        "seed": 4,
    }
    assert regime_spec("fewshot1_prototype", REGIMES)["selection"] == "prototype"
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


def test_scaling_size_the_task_cannot_supply_is_capped_and_marked(prepared_mini):
    regimes = {"scaling": {"n_train": [1000], "ratio": 4, "seed": 0}}
    manifest = _manifest(prepared_mini, "digits", "scale1000", regimes)
    assert manifest["capped"] == {"requested": [1000, 250], "available": 1000, "used": [800, 200]}
    assert (len(_indices(manifest, "train")), len(_indices(manifest, "val"))) == (800, 200)
    assert not _indices(manifest, "trainval") & _indices(manifest, "test")


def test_fewshot_draws_are_k_per_class_deterministic_and_differ(prepared_mini):
    manifest = _manifest(prepared_mini, "digits", "fewshot5_draw0")
    assert manifest["class_counts"]["train"] == [5] * 10 and manifest["class_counts"]["val"] == [5] * 10
    assert manifest["missing_classes"] == {"train": [], "val": []}
    assert not _indices(manifest, "train") & _indices(manifest, "val")
    assert manifest["splits"] == _manifest(prepared_mini, "digits", "fewshot5_draw0")["splits"]
    assert _indices(manifest, "train") != _indices(
        _manifest(prepared_mini, "digits", "fewshot5_draw1"), "train"
    )


def test_prototype_regime_needs_features_and_takes_the_nearest(prepared_mini):
    with pytest.raises(ValueError, match="prototype selection needs"):
        _manifest(prepared_mini, "digits", "fewshot1_prototype")
    data_dir, infos = prepared_mini
    spec = regime_spec("fewshot1_prototype", REGIMES)
    # a planted feature: the record's own index, so the class mean is the class's middle record
    manifest = build_manifest(
        "digits",
        "fewshot1_prototype",
        spec,
        infos["digits"],
        data_dir,
        pool_features=lambda task, pool: [[float(i)] for _, i in pool],
    )
    labels = tasks.load_labels(tasks.get_task("digits"), "train", data_dir)
    for index in manifest["splits"]["train"]["train"]:
        members = [i for i in range(1000) if labels[i] == labels[index]]
        mean = sum(members) / len(members)
        assert abs(index - mean) == min(abs(i - mean) for i in members)


def test_fewshot_reports_a_class_without_records(prepared_mini, monkeypatch):
    real = tasks.load_labels

    def without_class_3(task, split, data_dir, indices=None):
        labels = real(task, split, data_dir, indices).copy()
        labels[labels == 3] = 4
        return labels

    monkeypatch.setattr(tasks, "load_labels", without_class_3)
    manifest = _manifest(prepared_mini, "digits", "fewshot1_draw0")
    assert manifest["missing_classes"] == {"train": [3], "val": [3]}


def test_non_test_pool_excludes_a_test_slice_inside_train():
    eurosat = tasks.get_task("eurosat")  # test = train[21600:]
    pool = non_test_pool(eurosat, {"train": 27000})
    assert len(pool) == 21600 and max(i for _, i in pool) == 21599


def test_corrupt_manifest_is_refused(prepared_mini, tmp_path):
    path = tmp_path / "m.json"
    write_manifest(
        path, _manifest(prepared_mini, "digits", "vtab1k", {"vtab1k": {"n_train": 16, "n_val": 8}})
    )
    edited = json.loads(path.read_text())
    edited["splits"]["train"]["train"][0] = 900  # a val record leaks into train
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="hash mismatch"):
        read_manifest(path)
    path.write_text(path.read_text()[:50])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_manifest(path)
