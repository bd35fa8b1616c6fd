import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import write_digits_manifest
from vptft.attribution import (
    gradcam,
    integrated_gradients,
    load_trained,
    patch_grid_size,
    pick_examples,
    run_attribution,
)
from vptft.backbones.factory import create_backbone
from vptft.io import write_json
from vptft.strategies import get_strategy
from vptft.strategies.base import tuned_parameters, tuned_state_dict
from vptft.sweep import save_tuned

GRID = (4, 4)  # mini ViT: 32x32 input, patch 8


def _model(mini_vit, strategy, num_classes=5, **values):
    torch.manual_seed(1)
    return get_strategy(strategy).build(mini_vit, num_classes, **values).eval()


def _manual_gradcam(model, x, target, layer):
    """GradCAM by plain autograd: the first output of `layer`, its patch tokens' gradients averaged per channel."""
    seen = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out) if not seen else None)
    x = x.clone().requires_grad_(True)
    logits = model(x)
    handle.remove()
    tokens = seen[0]
    (grads,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), tokens)
    n_patch = GRID[0] * GRID[1]
    weights = grads[:, -n_patch:].mean(1)  # (N, D)
    cam = torch.relu((weights[:, None] * tokens[:, -n_patch:]).sum(-1))
    return cam.view(len(x), *GRID).detach()


@pytest.mark.parametrize("strategy,values", [("vpt_deep", {"prompt_length": 3}), ("full", {})])
def test_gradcam_is_a_patch_grid_map_equal_to_plain_autograd(mini_vit, strategy, values):
    model = _model(mini_vit, strategy, **values)
    torch.manual_seed(2)
    x, target = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 4])
    assert patch_grid_size(model) == GRID
    cam = gradcam(model, x, target, GRID)
    assert cam.shape == (3, *GRID)
    assert (cam >= 0).all() and cam.abs().sum() > 0
    expected = _manual_gradcam(model, x, target, model.backbone.blocks[-1].norm1)
    torch.testing.assert_close(cam, expected, atol=1e-5, rtol=1e-5)


def test_gradcam_on_final_norm_is_zero_for_cls_pooling_and_exact_for_patch_pooling(mini_vit):
    """Why the default layer is inside the last block: after the final norm, a CLS-pooled head reads no patch."""
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    cls_model = _model(mini_vit, "vpt_deep", prompt_length=3)
    assert gradcam(cls_model, x, target, GRID, layer=cls_model.backbone.norm).abs().max() == 0
    pooled = _model(
        create_backbone("mini_vit", pretrained=False), "vpt_deep", prompt_length=3, pooling="image_pool"
    )
    cam = gradcam(pooled, x, target, GRID, layer=pooled.backbone.norm)
    assert cam.abs().sum() > 0
    torch.testing.assert_close(
        cam, _manual_gradcam(pooled, x, target, pooled.backbone.norm), atol=1e-5, rtol=1e-5
    )


def test_integrated_gradients_completeness(mini_vit):
    model = _model(mini_vit, "vpt_deep", prompt_length=3)
    torch.manual_seed(3)
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    attr, delta = integrated_gradients(model, x, target, steps=64)
    assert attr.shape == x.shape and delta.shape == (2,)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(attr.sum((1, 2, 3)), gap, atol=1e-3, rtol=1e-2)
    assert delta.abs().max() < 1e-2 * gap.abs().max() + 1e-3


def test_pick_examples_returns_the_planted_indices():
    labels = np.arange(20) % 4
    pred_a, pred_b = labels.copy(), labels.copy()
    planted = [2, 7, 11, 19]
    pred_a[planted] = (labels[planted] + 1) % 4  # a wrong, b right
    pred_a[5], pred_b[5] = 0, 0  # both wrong (label 1): not a candidate
    pred_b[9] = (labels[9] + 1) % 4  # b wrong, a right: not a candidate
    assert pick_examples(labels, pred_a, pred_b, 10, seed=0).tolist() == planted
    two = pick_examples(torch.as_tensor(labels), torch.as_tensor(pred_a), torch.as_tensor(pred_b), 2, seed=1)
    assert len(two) == 2 and set(two) <= set(planted)
    assert two.tolist() == pick_examples(labels, pred_a, pred_b, 2, seed=1).tolist()
    assert pick_examples(labels, labels, labels, 3, seed=0).tolist() == []


# ------------------------------------------------------------------------------------------ saved runs


def _backbone_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "backbone.safetensors"
    save_file(
        {k: v.contiguous() for k, v in create_backbone("mini_vit", pretrained=False).state_dict().items()},
        str(path),
    )
    return path


def _save_run(run_dir, model, strategy, hparams, task="digits", **extra):
    save_tuned(model, run_dir / "tuned.safetensors")
    write_json(
        run_dir / "metrics.json",
        {"task": task, "strategy": strategy, "backbone": "mini_vit", "seed": 0, "hparams": hparams, **extra},
    )


def _trained(backbone_path, strategy, num_classes, seed, scale=0.5, **values):
    """A model as if trained: every tuned tensor of the strategy perturbed."""
    model = get_strategy(strategy).build(create_backbone("mini_vit", backbone_path), num_classes, **values)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in tuned_parameters(model).values():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    "strategy,hparams,options",
    [
        ("vpt_deep", {"lr": 0.1, "wd": 0.0, "prompt_length": 3}, None),
        ("vpt_deep", {"lr": 0.1, "wd": 0.0}, {"prompt_length": 2, "pooling": "image_pool"}),
        ("full", {"lr": 1e-3, "wd": 0.01}, None),
        # the VPT ablations' runs: fixed prompts (a buffer), the learned CLS token, biases, shared prompts
        ("vpt_deep", {"lr": 0.1, "wd": 0.0}, {"prompt_length": 2, "learn": "fixed"}),
        ("vpt_shallow", {"lr": 0.1, "wd": 0.0}, {"learn": "cls"}),
        ("vpt_deep", {"lr": 0.1, "wd": 0.0}, {"prompt_length": 2, "learn": "prompts_bias", "share": "inter"}),
        ("vpt_shallow", {"lr": 0.1, "wd": 0.0}, {"prompt_length": 2, "location": "concat_channel"}),
    ],
)
def test_load_trained_round_trip(tmp_path, strategy, hparams, options):
    backbone = _backbone_file(tmp_path)
    values = {**(options or {}), **hparams}
    model = _trained(backbone, strategy, 5, seed=4, **values)
    run = tmp_path / "run"
    _save_run(run, model, strategy, hparams, **({"options": options} if options else {}))
    loaded = load_trained(run, backbone, 5)
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_trained_refuses_a_file_that_does_not_fit(tmp_path):
    backbone = _backbone_file(tmp_path)
    model = _trained(backbone, "vpt_deep", 5, seed=4, prompt_length=3)
    run = tmp_path / "run"
    _save_run(run, model, "vpt_deep", {"lr": 0.1, "wd": 0.0, "prompt_length": 3})
    tuned = load_file(str(run / "tuned.safetensors"))
    save_file({**tuned, "adapter.weight": torch.zeros(2)}, str(run / "tuned.safetensors"))
    with pytest.raises(ValueError, match="tuned.safetensors.*adapter.weight"):
        load_trained(run, backbone, 5)
    save_file({k: v for k, v in tuned.items() if k != "prompts"}, str(run / "tuned.safetensors"))
    with pytest.raises(ValueError, match="prompts"):
        load_trained(run, backbone, 5)


def test_ft_then_pt_tuned_file_needs_the_run_it_continued(tmp_path):
    """FT-then-PT saves only prompts + head: its backbone is the full run's, found through start_from."""
    from vptft.sweep import load_backbone_of_run

    backbone = _backbone_file(tmp_path)
    full = _trained(backbone, "full", 5, seed=5)
    _save_run(tmp_path / "full", full, "full", {"lr": 1e-3, "wd": 0.0})
    stage2_backbone = create_backbone("mini_vit", backbone)
    load_backbone_of_run(stage2_backbone, tmp_path / "full" / "tuned.safetensors")
    model = get_strategy("ft_then_pt").build(stage2_backbone, 5, prompt_length=2).eval()
    with torch.no_grad():
        model.prompts.add_(torch.randn_like(model.prompts))
    run = tmp_path / "ft_then_pt"
    hparams = {"lr": 0.1, "wd": 0.0, "prompt_length": 2}
    _save_run(
        run,
        model,
        "ft_then_pt",
        hparams,
        provenance={"start_from": str(tmp_path / "full" / "tuned.safetensors")},
    )
    assert not any(k.startswith("backbone.") for k in tuned_state_dict(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_trained(run, backbone, 5)(x), model(x))
    _save_run(run, model, "ft_then_pt", hparams)  # no provenance: it cannot be rebuilt
    with pytest.raises(ValueError, match="start_from"):
        load_trained(run, backbone, 5)


# -------------------------------------------------------------------------------------------------- the job


@pytest.fixture
def mini_job(prepared_mini, tmp_path):
    """A digits manifest with a 48-image test split, a backbone file and a spec."""
    data_dir, _ = prepared_mini
    write_digits_manifest(tmp_path / "manifest.json", prepared_mini, n_test=48)
    spec = {
        "task": "digits",
        "backbone": "mini_vit",
        "data_dir": data_dir,
        "normalization": "backbone",
        "device": "cpu",
        "attribution": {"pair": ["full", "vpt_deep"], "n_images": 3, "ig_steps": 4, "seed": 0},
    }
    return spec, tmp_path / "manifest.json", _backbone_file(tmp_path)


def _runs(tmp_path, backbone, scale):
    runs = {}
    for strategy, hparams, seed in (
        ("full", {"lr": 1e-3, "wd": 0.0}, 6),
        ("vpt_deep", {"lr": 0.1, "wd": 0.0, "prompt_length": 2}, 7),
    ):
        model = _trained(
            backbone, strategy, 10, seed=seed, **{k: v for k, v in hparams.items() if k not in ("lr", "wd")}
        )
        if scale == 0:  # a zero head: every image is class 0 for both, so none qualifies
            torch.nn.init.zeros_(model.head.weight)
            torch.nn.init.zeros_(model.head.bias)
        runs[strategy] = str(tmp_path / strategy / "seed0")
        _save_run(tmp_path / strategy / "seed0", model, strategy, hparams)
    return runs


def test_run_attribution_end_to_end(mini_job, tmp_path):
    spec, manifest, backbone = mini_job
    out = tmp_path / "out"
    summary = run_attribution(spec, manifest, backbone, _runs(tmp_path, backbone, 1), out)
    n = summary["n_images"]
    assert summary["n_candidates"] >= 1 and n == min(3, summary["n_candidates"])
    assert set(summary["test_top1"]) == {"full", "vpt_deep"}
    maps = np.load(out / "maps.npz")
    assert maps["images"].shape == (n, 3, 32, 32) and maps["images"].dtype == np.uint8
    assert maps["labels"].shape == maps["index"].shape == (n,)
    assert maps["pair"].tolist() == ["full", "vpt_deep"]
    assert (maps["pred_full"] != maps["labels"]).all() and (maps["pred_vpt_deep"] == maps["labels"]).all()
    for s in ("full", "vpt_deep"):
        assert maps[f"gradcam_{s}"].shape == (n, *GRID) and (maps[f"gradcam_{s}"] >= 0).all()
        assert maps[f"ig_{s}"].shape == (n, 32, 32) and maps[f"ig_delta_{s}"].shape == (n,)
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["test_index"]) for r in rows] == maps["index"].tolist()
    assert [int(r["pred_full"]) for r in rows] == maps["pred_full"].tolist()
    assert [int(r["label"]) for r in rows] == maps["labels"].tolist()


def test_run_attribution_without_candidates_writes_empty_files(mini_job, tmp_path, capsys):
    spec, manifest, backbone = mini_job
    out = tmp_path / "out"
    summary = run_attribution(spec, manifest, backbone, _runs(tmp_path, backbone, 0), out)
    assert summary["n_candidates"] == summary["n_images"] == 0
    assert "no test image" in capsys.readouterr().out
    maps = np.load(out / "maps.npz")
    assert maps["images"].shape == (0, 3, 32, 32) and maps["gradcam_vpt_deep"].shape == (0, *GRID)
    assert maps["ig_full"].shape == (0, 32, 32)
    with open(out / "index.csv") as f:
        assert f.read().splitlines() == [
            "test_index,label,pred_full,pred_vpt_deep,ig_delta_full,ig_delta_vpt_deep"
        ]
    assert json.loads(json.dumps(summary))  # plain types


# ------------------------------------------------------------------------ the seeds as an ensemble (VPT Figure 15)


def _test_probabilities(model, spec, manifest):
    """The test images' softmax probabilities, computed here without the ensemble module."""
    from vptft.backbones.factory import input_config
    from vptft.data import Normalize, load_split
    from vptft.splits import read_manifest

    cfg = input_config(model.backbone, spec["normalization"])
    test = load_split(read_manifest(manifest), "test", spec["data_dir"], cfg["size"])
    with torch.no_grad():
        logits = model(Normalize(cfg["mean"], cfg["std"], cfg.get("size"))(test.images))
    return logits.softmax(1), test.labels


def _seed_runs(tmp_path, spec, manifest, backbone, seeds, misreport=None):
    """vpt_deep runs of `seeds`, each recording its own test top-1 (or a wrong one for seed `misreport`)."""
    probs, dirs = [], []
    for seed in seeds:
        model = _trained(backbone, "vpt_deep", 10, seed=seed, scale=1.0, prompt_length=2)
        p, labels = _test_probabilities(model, spec, manifest)
        top1 = 100.0 * (p.argmax(1) == labels).float().mean().item() + (30.0 if seed == misreport else 0.0)
        run_dir = tmp_path / "vpt_deep" / f"seed{seed}"
        _save_run(run_dir, model, "vpt_deep", {"lr": 0.1, "wd": 0.0, "prompt_length": 2}, test_top1=top1)
        write_json(
            run_dir / "metrics.json", {**json.loads((run_dir / "metrics.json").read_text()), "seed": seed}
        )
        probs.append(p)
        dirs.append(str(run_dir))
    return dirs, probs, labels


def test_an_ensemble_predicts_the_class_of_the_seeds_mean_probability(mini_job, tmp_path):
    import pandas as pd

    from vptft.ensemble import seed_ensemble

    spec, manifest, backbone = mini_job
    spec = {**spec, "strategy": "vpt_deep"}
    dirs, probs, labels = _seed_runs(tmp_path, spec, manifest, backbone, [0, 1, 2])
    rows = seed_ensemble(spec, manifest, backbone, dirs, tmp_path / "out.csv")
    table = pd.read_csv(tmp_path / "out.csv")
    assert table.to_dict("records") == pd.DataFrame(rows).to_dict("records")
    assert list(table.member) == ["seed0", "seed1", "seed2", "ensemble"]
    expected = 100.0 * (torch.stack(probs).mean(0).argmax(1) == labels).float().mean().item()
    assert table.set_index("member").test_top1["ensemble"] == pytest.approx(expected)
    assert table.set_index("member").seeds["ensemble"] == 3
    singles = [100.0 * (p.argmax(1) == labels).float().mean().item() for p in probs]
    assert table.test_top1[:3].tolist() == pytest.approx(singles)
    assert len(set(singles)) > 1  # the seeds' models differ, so the ensemble is more than a copy of one


def test_an_ensemble_refuses_a_seed_whose_rebuilt_model_misses_its_recorded_top1(mini_job, tmp_path):
    from vptft.ensemble import seed_ensemble

    spec, manifest, backbone = mini_job
    spec = {**spec, "strategy": "vpt_deep"}
    dirs, _, _ = _seed_runs(tmp_path, spec, manifest, backbone, [0, 1], misreport=1)
    with pytest.raises(ValueError, match="seed1: the rebuilt model scores"):
        seed_ensemble(spec, manifest, backbone, dirs, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ValueError, match="two or more seeds"):
        seed_ensemble(spec, manifest, backbone, dirs[:1], tmp_path / "out.csv")
    with pytest.raises(ValueError, match="a run of 'vpt_deep' on 'digits', not 'full'"):
        seed_ensemble({**spec, "strategy": "full"}, manifest, backbone, dirs, tmp_path / "out.csv")


def test_figure15_sets_the_ensemble_against_the_seeds_mean_and_best(tmp_path):
    import pandas as pd

    from vptft.figures import ensemble_summary, vpt_figure15

    members = pd.DataFrame(
        {
            "task": ["a"] * 4 + ["b"] * 4,
            "strategy": ["full", "full", "full", "full", "full", "full", "full", "full"],
            "member": ["seed0", "seed1", "seed2", "ensemble"] * 2,
            "seeds": [1, 1, 1, 3] * 2,
            "test_top1": [50.0, 60.0, 70.0, 72.0, 20.0, 30.0, 40.0, 26.0],
        }
    )
    table = ensemble_summary(members).set_index("task")
    assert table.loc["a", ["seed_mean", "seed_best", "ensemble", "gain"]].tolist() == [60.0, 70.0, 72.0, 12.0]
    assert table.loc["b", "gain"] == -4.0  # an ensemble can lose to its seeds' mean: the figure shows it
    assert table.loc["mean", ["seed_mean", "ensemble"]].tolist() == [45.0, 49.0]
    vpt_figure15(members, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


# ------------------------------------------------------------------- example images (Han Fig. 19, VPT Fig. 10)


def test_examples_show_different_classes_first():
    from vptft.examples import pick_distinct

    assert pick_distinct([3, 3, 1, 3, 2, 1], 4) == [0, 2, 4, 1]  # classes 3, 1, 2, then the next record
    assert pick_distinct([5, 5], 4) == [0, 1]  # fewer records than asked: all of them


def test_task_examples_decode_train_records_of_distinct_classes(prepared_mini, tmp_path):
    from vptft.examples import task_examples
    from vptft.figures import task_examples as draw

    data_dir, _ = prepared_mini
    write_digits_manifest(tmp_path / "manifest.json", prepared_mini, n_test=8)
    arrays = task_examples({"digits": str(tmp_path / "manifest.json")}, data_dir, per_task=3, side=20)
    assert arrays["images"].shape == (1, 3, 3, 20, 20) and arrays["images"].dtype == np.uint8
    assert len(set(arrays["labels"][0].tolist())) == 3 and arrays["images"].max() > 0
    assert arrays["captions"][0].tolist() == [str(label) for label in arrays["labels"][0]]  # digits: no names
    assert arrays["tasks"].tolist() == ["digits"] and arrays["groups"].tolist() == ["specialized"]
    shown = draw(arrays, [tmp_path / "a.png", tmp_path / "b.png"])
    assert len(shown) == 3 and (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with pytest.raises(ValueError, match="the manifest of 'digits', not 'count_src'"):
        task_examples({"count_src": str(tmp_path / "manifest.json")}, data_dir, per_task=3, side=20)


# -------------------------------------------------------------------- t-SNE of the final features (VPT Figs 9, 21)


def test_tsne_maps_embed_each_strategys_features_of_one_seeded_test_sample(mini_job, tmp_path):
    from vptft.figures import tsne_panels
    from vptft.tsne import tsne_maps

    spec, manifest, backbone = mini_job
    spec = {**spec, "tsne": {"n_images": 30, "perplexity": 30.0, "seed": 0}}
    runs = _runs(tmp_path, backbone, 1)
    top1 = tsne_maps(spec, manifest, backbone, runs, tmp_path / "a.npz")
    tsne_maps(spec, manifest, backbone, runs, tmp_path / "b.npz")
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["index"].shape == a["labels"].shape == (30,) and len(set(a["index"])) == 30
    assert a["strategies"].tolist() == ["full", "vpt_deep"]
    for strategy in ("full", "vpt_deep"):
        assert a[f"emb_{strategy}"].shape == (30, 2) and np.isfinite(a[f"emb_{strategy}"]).all()
        np.testing.assert_array_equal(a[f"emb_{strategy}"], b[f"emb_{strategy}"])  # seeded: the same map
        assert float(a[f"top1_{strategy}"]) == top1[strategy]
    assert not np.allclose(a["emb_full"], a["emb_vpt_deep"])  # two models, two feature spaces
    shown = tsne_panels({"digits": dict(a)}, "VPT Figure 9", tmp_path / "f.png")
    assert shown.strategy.tolist() == ["full", "vpt_deep"] and (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="a run of 'full' on 'digits', not 'vpt_deep'"):
        tsne_maps(spec, manifest, backbone, {"vpt_deep": runs["full"]}, tmp_path / "c.npz")
