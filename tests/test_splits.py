import json

import pytest

from vptft.splits import build_manifest, read_manifest, write_manifest


def _indices(manifest, split):
    return {(src, i) for src, idx in manifest["splits"][split].items() for i in idx}


@pytest.mark.parametrize("task", ["newshapes_src", "digits"])
def test_vtab1k_manifest_sizes_and_disjointness(prepared_mini, task, tmp_path):
    data_dir, infos = prepared_mini
    manifest = build_manifest(task, "vtab1k", 160, 40, infos[task], data_dir)
    train, val, trainval, test = (_indices(manifest, s) for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(trainval)) == (160, 40, 200)
    assert trainval == train | val
    assert not train & val and not trainval & test
    assert len(test) == infos[task]["split_sizes"]["test"]
    assert sum(manifest["class_counts"]["train"]) == 160
    write_manifest(tmp_path / "m.json", manifest)
    assert read_manifest(tmp_path / "m.json")["splits"] == json.loads(json.dumps(manifest["splits"]))


def test_paper_sized_regime_on_mini(prepared_mini):
    data_dir, infos = prepared_mini
    manifest = build_manifest("newshapes_src", "vtab1k", 800, 200, infos["newshapes_src"], data_dir)
    assert manifest["splits"]["val"] == {"train": list(range(800, 1000))}


def test_too_large_regime_is_refused(prepared_mini):
    data_dir, infos = prepared_mini
    with pytest.raises(ValueError, match="only 200 exist"):
        build_manifest("newshapes_src", "vtab1k", 160, 300, infos["newshapes_src"], data_dir)


def test_corrupt_manifest_is_refused(prepared_mini, tmp_path):
    data_dir, infos = prepared_mini
    path = tmp_path / "m.json"
    write_manifest(path, build_manifest("digits", "vtab1k", 16, 8, infos["digits"], data_dir))
    edited = json.loads(path.read_text())
    edited["splits"]["train"]["train"][0] = 900  # a val record leaks into train
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="hash mismatch"):
        read_manifest(path)
    path.write_text(path.read_text()[:50])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_manifest(path)
