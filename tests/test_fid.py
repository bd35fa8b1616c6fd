import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vptft import fid
from vptft.splits import build_manifest, regime_spec, write_manifest


def _gaussian(n=400, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_mean_shift():
    a = _gaussian()
    assert abs(fid.frechet_distance(a, a)) < 1e-6
    values = [fid.frechet_distance(a, a + shift) for shift in (0.5, 1.0, 2.0)]
    assert values[0] < values[1] < values[2]
    # a pure shift keeps the covariance: FID is ||mu1 - mu2||^2 = D * shift^2
    assert values == pytest.approx([a.shape[1] * s**2 for s in (0.5, 1.0, 2.0)], rel=1e-6)


def test_fid_refuses_too_few_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        fid.frechet_distance(_gaussian(1), _gaussian())


def test_fid_with_repeats_is_small_for_the_same_distribution():
    task, same, shifted = _gaussian(seed=0), _gaussian(900, seed=1), _gaussian(900, seed=2) + 1.0
    near = fid.fid_with_repeats(task, same, n_reference=300, repeats=3, seed=0)
    far = fid.fid_with_repeats(task, shifted, n_reference=300, repeats=3, seed=0)
    assert len(near["values"]) == 3 and np.isfinite(near["std"]) and near["std"] >= 0
    assert near["mean"] < 0.2 * far["mean"]
    assert near == fid.fid_with_repeats(task, same, n_reference=300, repeats=3, seed=0)  # seeded
    overlapping = fid.fid_with_repeats(task, same, n_reference=600, repeats=2, seed=0)  # pool < 1200
    assert len(overlapping["values"]) == 2
    with pytest.raises(ValueError, match="pool of at least 1000"):
        fid.fid_with_repeats(task, same, n_reference=1000, repeats=1, seed=0)


def test_backbone_features_are_the_pooled_pre_logits(mini_vit):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3}
    feats = fid.backbone_features(mini_vit, images, cfg, "cpu", batch_size=2)
    assert feats.shape == (5, mini_vit.embed_dim) and feats.dtype == np.float64
    with torch.no_grad():
        expected = mini_vit.eval()((images.float() / 255 - 0.5) / 0.5)
    np.testing.assert_allclose(feats, expected.double().numpy(), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Random weights of the FID Inception architecture, saved the way pytorch-fid's file is (a state dict)."""
    path = tmp_path_factory.mktemp("fid") / "random_inception.pth"
    torch.manual_seed(0)
    torch.save(fid.fid_inception_architecture().state_dict(), path)
    return path


def test_inception_features_load_a_local_weights_file(inception_weights):
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    feats = fid.inception_features(images, inception_weights, "cpu", batch_size=1)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()


def test_bad_inception_weights_name_the_file_and_config_key(tmp_path):
    garbage = tmp_path / "pt_inception.pth"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(
        ValueError, match=r"pt_inception.pth: not FID Inception weights.*fid.inception_weights"
    ):
        fid.inception_features(torch.zeros((1, 3, 8, 8), dtype=torch.uint8), garbage, "cpu")
    torch.save({"fc.weight": torch.zeros(3)}, garbage)  # a loadable state dict of another model
    with pytest.raises(ValueError, match="not FID Inception weights"):
        fid.load_fid_inception(garbage)
    with pytest.raises(ValueError, match=r"missing.pth: .*not found.*fid.inception_weights"):
        fid.load_fid_inception(tmp_path / "missing.pth")


def test_mini_reference_is_a_fresh_render_of_the_source_distribution():
    images = fid.reference_images("mini", 6, 99, None, (32, 32))
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, fid.reference_images("mini", 6, 99, None, (32, 32)))
    assert not torch.equal(images, fid.reference_images("mini", 6, 100, None, (32, 32)))
    assert fid.reference_images("mini", 2, 99, None, (48, 48)).shape == (2, 3, 48, 48)


def test_reference_images_from_a_folder(tmp_path):
    with pytest.raises(ValueError, match="fid.reference_dir"):
        fid.reference_images("vtab", 2, 0, None, (32, 32))
    with pytest.raises(ValueError, match="0 image files.*fid.reference_dir"):
        fid.reference_images("vtab", 2, 0, str(tmp_path), (32, 32))
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    for i, size in enumerate([(20, 30), (40, 40), (12, 16)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "sub" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "gray.JPG")  # grey -> RGB
    (tmp_path / "notes.txt").write_text("not an image")
    images = fid.reference_images("vtab", 4, 0, str(tmp_path), (24, 24))
    assert images.shape == (4, 3, 24, 24) and images.dtype == torch.uint8
    assert torch.equal(images, fid.reference_images("vtab", 4, 0, str(tmp_path), (24, 24)))
    with pytest.raises(ValueError, match=r"4 image files \(png/jpg/jpeg\) where FID needs 5"):
        fid.reference_images("vtab", 5, 0, str(tmp_path), (24, 24))


def test_run_fid_on_a_mini_task(prepared_mini, mini_vit, tmp_path):
    data_dir, infos = prepared_mini
    regimes = {"vtab1k": {"n_train": 120, "n_val": 40}}
    manifest = build_manifest(
        "newshapes_src", "vtab1k", regime_spec("vtab1k", regimes), infos["newshapes_src"], data_dir
    )
    write_manifest(tmp_path / "manifest.json", manifest)
    backbone = tmp_path / "mini_vit.safetensors"
    save_file({k: v.contiguous() for k, v in mini_vit.state_dict().items()}, str(backbone))
    spec = {
        "task": "newshapes_src",
        "benchmark": "mini",
        "backbone": "mini_vit",
        "data_dir": data_dir,
        "normalization": "backbone",
        "device": "cpu",
        "fid": {
            "features": "backbone",
            "inception_weights": None,
            "reference_dir": None,
            "n_reference": 120,
            "repeats": 2,
            "seed": 0,
            "split": "trainval",
        },
    }
    out = fid.run_fid(spec, tmp_path / "manifest.json", backbone, tmp_path / "fid.json")
    assert json.loads((tmp_path / "fid.json").read_text()) == out
    assert {
        k: out[k] for k in ("task", "group", "domain", "features", "repeats", "n_task", "n_reference")
    } == {
        "task": "newshapes_src",
        "group": "natural",
        "domain": "source",
        "features": "backbone:mini_vit",
        "repeats": 2,
        "n_task": 160,
        "n_reference": 120,
    }
    assert len(out["fid_values"]) == 2 and out["fid_mean"] > 0 and np.isfinite(out["fid_std"])
    assert out["fid_mean"] == pytest.approx(np.mean(out["fid_values"]))
    assert not list(tmp_path.glob(".fid.json.*"))  # written atomically


def test_run_fid_with_inception_features_reads_the_configured_weights(prepared_mini, tmp_path, monkeypatch):
    data_dir, infos = prepared_mini
    regimes = {"vtab1k": {"n_train": 40, "n_val": 10}}
    manifest = build_manifest("digits", "vtab1k", regime_spec("vtab1k", regimes), infos["digits"], data_dir)
    write_manifest(tmp_path / "manifest.json", manifest)
    loaded = []

    class PooledGrey(torch.nn.Module):  # stands in for the 2048-d pool3 (a real Inception is slow on CPU)
        def forward(self, x):
            assert 0 <= x.min() and x.max() <= 1  # pytorch-fid's input range
            grey = x[:, :1]  # digits are grey: one channel keeps the covariance full-rank
            quadrants = torch.nn.functional.adaptive_avg_pool2d(grey, 2).flatten(1)
            return [torch.cat([quadrants, grey.std((2, 3))], 1)[:, :, None, None]]

    monkeypatch.setattr(fid, "load_fid_inception", lambda path: loaded.append(path) or PooledGrey())
    spec = {
        "task": "digits",
        "benchmark": "mini",
        "backbone": "mini_vit",
        "data_dir": data_dir,
        "normalization": "backbone",
        "device": "cpu",
        "fid": {
            "features": "inception",
            "inception_weights": "/weights/pt_inception-2015-12-05-6726825d.pth",
            "reference_dir": None,
            "n_reference": 30,
            "repeats": 2,
            "seed": 1,
            "split": "trainval",
        },
    }
    out = fid.run_fid(spec, tmp_path / "manifest.json", None, tmp_path / "fid.json")
    assert loaded == [spec["fid"]["inception_weights"]]  # loaded once for task and reference
    assert out["features"] == "inception:pt_inception-2015-12-05-6726825d.pth"
    assert (out["group"], out["domain"], out["n_task"]) == ("specialized", "shifted", 50)
    assert out["fid_mean"] > 0 and len(out["fid_values"]) == 2
