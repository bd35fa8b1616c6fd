"""The sweep, final-run and stage-1 jobs in-process, on a few digits: what each writes and the protocol's
numbers in it (batch rule, epochs and warm-up, scaled lr, selection, seeds, one run per seed)."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import spy_autocast, write_digits_manifest
from vptft import engine
from vptft.attribution import load_trained
from vptft.backbones.factory import create_backbone
from vptft.io import write_json
from vptft.selection import merge_sweep, read_csv
from vptft.sweep import Job, run_final, run_stage1, run_sweep_chunk

TRAIN = {
    "batch_size": 8,
    "epochs": 2,
    "min_steps": 6,
    "warmup_fraction": 0.5,
    "lr_scale_batch": 256,
    "normalization": "backbone",
    "head_init": "zero",
    "device": "cpu",
    "optimizer_behavior": "vpt_code",
    "precision": "fp32",
    "compile": False,
    "backbone_dropout": 0.0,
    "sweep_seed": 0,
    "sweep_chunk_size": None,
    "curve_points": 2,
}


@pytest.fixture(scope="module")
def job_files(prepared_mini, tmp_path_factory):
    data_dir, _ = prepared_mini
    tmp = tmp_path_factory.mktemp("sweep")
    write_digits_manifest(tmp / "manifest.json", prepared_mini, n_test=40)
    torch.manual_seed(0)
    backbone = create_backbone("mini_vit", pretrained=False)
    save_file(
        {k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp / "backbone.safetensors")
    )
    return tmp, data_dir


def _spec(strategy, grid, data_dir, **extra):
    return {
        "task": "digits",
        "regime": "vtab1k",
        "strategy": strategy,
        "backbone": "mini_vit",
        "data_dir": data_dir,
        "grid": grid,
        "train": dict(TRAIN),
        **extra,
    }


def _sweep(tmp, spec, name):
    rows = run_sweep_chunk(
        spec, tmp / "manifest.json", tmp / "backbone.safetensors", tmp / f"{name}_chunk0.csv"
    )
    best = merge_sweep([tmp / f"{name}_chunk0.csv"], tmp / f"{name}_sweep.csv", expected_points=len(rows))
    return rows, best


def test_a_sweep_writes_every_point_with_the_protocols_numbers(job_files):
    tmp, data_dir = job_files
    spec = _spec("vpt_deep", {"lr": [0.5, 0.1], "wd": [0.001], "prompt_length": [1, 2]}, data_dir)
    rows, best = _sweep(tmp, spec, "vpt")
    assert [r["grid_index"] for r in rows] == [0, 1, 2, 3]
    assert [(r["lr"], r["prompt_length"]) for r in rows] == [(0.5, 1), (0.5, 2), (0.1, 1), (0.1, 2)]
    for row in rows:
        assert row["batch_size"] == 8 and row["lr_scaled"] == pytest.approx(row["lr"] * 8 / 256)
        assert row["epochs"] == 3  # 16 images at batch 8: 2 steps an epoch, min_steps 6 -> 3 epochs (> 2)
        assert 0 <= row["val_top1"] <= 100 and row["val_loss"] > 0 and row["train_loss"] > 0
        assert row["tuned"] == 4 * row["prompt_length"] * 96 + 96 * 10 + 10  # prompts + head
        assert isinstance(row["seconds"], float) and 0 < row["seconds"] == round(row["seconds"], 3)
    top = max(float(r["val_top1"]) for r in rows)
    assert float(best["val_top1"]) == top
    assert float(best["lr"]) == min(
        float(r["lr"]) for r in rows if float(r["val_top1"]) == top
    )  # ties: smaller


def test_final_runs_say_when_their_data_size_was_capped(job_files):
    """A data-scaling size the task cannot supply is capped by the splits (the manifest says so): its runs too."""
    tmp, data_dir = job_files
    capped = {"requested": [20000, 5000], "available": 24, "used": [19, 5]}
    manifest = json.loads((tmp / "manifest.json").read_text())
    del manifest["sha256"]
    write_json(tmp / "capped.json", {**manifest, "capped": capped}, with_hash=True)
    spec = _spec("linear", {"lr": [0.1], "wd": [0.0]}, data_dir)
    _sweep(tmp, spec, "lin")
    [metrics] = run_final(
        spec, tmp / "capped.json", tmp / "backbone.safetensors", tmp / "lin_sweep.csv", tmp / "lin", [0]
    )
    assert metrics["data"]["capped"] == capped


def test_provenance_names_the_code_commit_and_the_gpu(job_files, monkeypatch, tmp_path_factory):
    from vptft import sweep

    tmp, data_dir = job_files
    job = Job(
        _spec("linear", {"lr": [0.1], "wd": [0.0]}, data_dir),
        tmp / "manifest.json",
        tmp / "backbone.safetensors",
    )
    repo = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(sweep.__file__).parent
    )
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # the commit is the code's, not the working dir's
    assert sweep.provenance(job, 0)["git_commit"] == (repo.stdout.strip() if repo.returncode == 0 else None)
    outside = tmp_path_factory.mktemp("installed")  # code outside a git checkout (pip-installed): no commit
    monkeypatch.setattr(sweep, "__file__", str(outside / "sweep.py"))
    assert sweep.provenance(job, 0)["git_commit"] is None
    job.device = torch.device("cuda")  # the GPU's name, decided without one
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"H100 at {device}")
    assert sweep.provenance(job, 0)["device"] == "cuda (H100 at cuda)"


def test_a_jobs_fit_config_carries_every_training_setting(job_files):
    from vptft.strategies import LONG_PROMPT

    tmp, data_dir = job_files
    spec = _spec("vpt_deep", {"lr": [0.1], "wd": [0.0]}, data_dir, batch_size_long_prompts=4)
    spec["train"].update(
        epochs=20, min_steps=0, warmup_fraction=0.25, lr_scale_batch=128, precision="bf16", compile=True
    )
    spec["train"]["checkpoint_minutes"] = 2
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    cfg = job.fit_config({"lr": 0.1, "wd": 0.001, "prompt_length": LONG_PROMPT}, 3, 16, curve_points=2)
    assert (cfg.batch_size, cfg.epochs, cfg.warmup_epochs, cfg.seed) == (4, 20, 5, 3)  # the long-prompt batch
    assert (cfg.lr, cfg.weight_decay, cfg.lr_scale_batch) == (0.1, 0.001, 128)
    assert (cfg.precision, cfg.compile, cfg.checkpoint_interval_s) == ("bf16", True, 120.0)
    assert cfg.eval_epochs == engine.eval_epochs(20, 2)
    spec["train"].update(epochs=8, warmup_fraction=0.1)
    del spec["train"]["checkpoint_minutes"]
    cfg = job.fit_config({"lr": 0.1, "wd": 0.0, "prompt_length": 1}, 0, 16, curve_points=1)
    assert (cfg.batch_size, cfg.warmup_epochs, cfg.checkpoint_interval_s) == (
        8,
        1,
        0.0,
    )  # at least one warm-up
    spec["train"]["warmup_fraction"] = 0.0
    assert job.fit_config({"lr": 0.1, "wd": 0.0}, 0, 16, curve_points=1).warmup_epochs == 0


def test_a_job_loads_what_its_spec_asks_for(job_files):
    """Deterministic kernels on the CPU, backbone dropout only where the backbone trains, the normalisation."""
    tmp, data_dir = job_files
    torch.use_deterministic_algorithms(False)
    try:
        full = _spec("full", {"lr": [0.1], "wd": [0.0]}, data_dir, options={"prompt_length": 3})
        full["train"].update(backbone_dropout=0.1, normalization="imagenet")
        job = Job(full, tmp / "manifest.json", tmp / "backbone.safetensors")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    drops = {m.p for m in job.backbone.modules() if isinstance(m, torch.nn.Dropout)}
    assert drops == {0.0, 0.1}  # position, attention output and MLP at 0.1; attention probabilities at 0
    assert job.input_cfg["mean"] == (0.485, 0.456, 0.406)
    assert job.values({"lr": 0.1}) == {"prompt_length": 3, "lr": 0.1}  # the strategy's fixed options join
    linear = _spec("linear", {"lr": [0.1], "wd": [0.0]}, data_dir)
    linear["train"].update(backbone_dropout=0.1)
    job = Job(linear, tmp / "manifest.json", tmp / "backbone.safetensors")
    assert {m.p for m in job.backbone.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    assert job.input_cfg["mean"] == tuple(job.backbone.pretrained_cfg["mean"]) != (0.485, 0.456, 0.406)


@pytest.mark.parametrize("strategy", ["linear", "full"])  # heads in lockstep on cached features; one by one
def test_grid_points_evaluate_once_at_the_end_at_the_jobs_precision(job_files, monkeypatch, strategy):
    tmp, data_dir = job_files
    spec = _spec(strategy, {"lr": [0.01, 0.02], "wd": [0.0]}, data_dir)
    spec["train"].update(epochs=3, min_steps=0, precision="bf16")
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    precisions = spy_autocast(monkeypatch, engine)
    for _, _, _, result in job.fit_points([{"lr": 0.01, "wd": 0.0}, {"lr": 0.02, "wd": 0.0}], seed=0):
        assert ["val_top1" in row for row in result["curves"]] == [False, False, True]
    assert precisions and set(precisions) == {"bf16"}


def test_sweep_chunks_split_the_grid(job_files):
    tmp, data_dir = job_files
    spec = _spec("linear", {"lr": [0.1, 0.2, 0.4], "wd": [0.0]}, data_dir)
    spec["train"]["sweep_chunk_size"] = 2
    args = (tmp / "manifest.json", tmp / "backbone.safetensors")
    first = run_sweep_chunk(spec, *args, tmp / "c0.csv", chunk=0)
    second = run_sweep_chunk(spec, *args, tmp / "c1.csv", chunk=1)
    assert [r["grid_index"] for r in first + second] == [0, 1, 2]
    whole = run_sweep_chunk(
        {**spec, "train": {**spec["train"], "sweep_chunk_size": None}}, *args, tmp / "w.csv"
    )
    assert [r["val_top1"] for r in whole] == [
        r["val_top1"] for r in first + second
    ]  # same points, same numbers


def test_final_runs_train_the_selected_point_once_per_seed(job_files):
    tmp, data_dir = job_files
    spec = _spec("full", {"lr": [0.001, 0.01], "wd": [0.01]}, data_dir)
    _, best = _sweep(tmp, spec, "full")
    runs = tmp / "full_runs"
    results = run_final(
        spec, tmp / "manifest.json", tmp / "backbone.safetensors", tmp / "full_sweep.csv", runs, [0, 3]
    )
    assert [m["seed"] for m in results] == [0, 3]
    assert (
        results[0]["test_top1"] != results[1]["test_top1"]
        or results[0]["train_loss"] != results[1]["train_loss"]
    )
    for seed, metrics in zip((0, 3), results):
        run = runs / f"seed{seed}"
        assert json.loads((run / "metrics.json").read_text()) == metrics
        assert metrics["hparams"] == {"lr": float(best["lr"]), "wd": 0.01}
        assert metrics["n_train"] == 24 and metrics["n_test"] == 40  # train + val; the test slice
        assert metrics["final_split"] == "trainval"
        assert metrics["data"] == {"n_train": 16, "n_val": 8, "capped": None}
        assert metrics["epochs"] == engine.epochs_for(24, 8, 2, 6) == 2 and metrics["batch_size"] == 8
        assert metrics["optimizer"] == "adamw" and metrics["tuned_pct"] == 100.0
        assert metrics["provenance"]["seed"] == seed and metrics["provenance"]["arithmetic"]["threads"] >= 1
        curves = read_csv(run / "curves.csv")
        assert [int(r["epoch"]) for r in curves] == [1, 2] and float(curves[0]["lr"]) == 0.0  # warm-up epoch
        assert all(r["test_top1"] != "" for r in curves)  # curve_points 2 of 2 epochs
        assert not any("checkpoint" in p.name.lower() for p in run.iterdir())  # resume state removed
        assert isinstance(metrics["seconds"], float) and 0 < metrics["seconds"] == round(
            metrics["seconds"], 3
        )
        model = load_trained(run, tmp / "backbone.safetensors", 10)
        from vptft.data import Normalize, load_split
        from vptft.splits import read_manifest

        test = load_split(read_manifest(tmp / "manifest.json"), "test", data_dir, (32, 32))
        with torch.no_grad():
            pred = model(Normalize((0.5,) * 3, (0.5,) * 3)(test.images)).argmax(1)
        assert metrics["test_top1"] == pytest.approx(100.0 * (pred == test.labels).float().mean().item())


def _stage1(tmp, spec, name):
    """Sweep `spec` as `name`, then retrain its selected point (stage 1) into name.safetensors."""
    _sweep(tmp, spec, name)
    return run_stage1(
        spec,
        tmp / "manifest.json",
        tmp / "backbone.safetensors",
        tmp / f"{name}_sweep.csv",
        tmp / f"{name}.safetensors",
    )


def test_stage1_retrains_the_selected_point_on_the_sweeps_train_split(job_files):
    tmp, data_dir = job_files
    spec = _spec("full", {"lr": [0.001, 0.01], "wd": [0.01]}, data_dir)
    result = _stage1(tmp, spec, "full_s1")
    rows = read_csv(tmp / "full_s1_sweep.csv")
    selected = next(r for r in rows if r["selected"] == "1")
    assert result["final"]["val"]["top1"] == pytest.approx(
        float(selected["val_top1"])
    )  # what the sweep trained
    weights = load_file(str(tmp / "full_s1.safetensors"))
    assert any(k.startswith("backbone.blocks.") for k in weights) and "head.weight" in weights


def test_a_job_refuses_a_schedule_its_strategy_cannot_run(job_files):
    tmp, data_dir = job_files
    spec = _spec("adapt", {"lr": [0.1], "wd": [0.0]}, data_dir, options={"warmup_epochs": 5})
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    with pytest.raises(ValueError, match="adapt"):
        job.fit_config({"lr": 0.1, "wd": 0.0}, 0, 16, 1)


METRICS_KEYS = {
    "task", "regime", "strategy", "base_strategy", "variant", "backbone", "seed", "hparams", "options", "data",
    "lr_scaled", "batch_size",
    "optimizer", "optimizer_behavior", "precision", "compile", "backbone_dropout", "epochs", "test_top1",
    "test_loss", "train_loss", "train_top1", "n_train", "final_split", "n_test", "tuned", "total", "tuned_pct",
    "backbone_params", "task_params", "summary", "class_texts", "seconds", "checkpoints", "checkpoint_bytes",
    "provenance",
}  # fmt: skip


def test_a_final_runs_metrics_hold_what_the_tables_and_provenance_read(job_files, monkeypatch):
    """The metrics.json contract, key by key (the collected runs tables and the provenance checks read it)."""
    import platform
    import subprocess

    import timm

    import vptft
    from vptft import reproducibility
    from vptft.io import content_hash
    from vptft.splits import read_manifest

    tmp, data_dir = job_files
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    spec = _spec(
        "vpt_deep",
        {"lr": [0.1], "wd": [0.001], "prompt_length": [2]},
        data_dir,
        options={"prompt_dropout": 0.0},
    )
    spec["train"].update(epochs=3, min_steps=0, backbone_dropout=0.1, curve_points=2)
    _sweep(tmp, spec, "contract")
    [m] = run_final(
        spec, tmp / "manifest.json", tmp / "backbone.safetensors", tmp / "contract_sweep.csv", tmp / "c", [5]
    )
    assert set(m) == METRICS_KEYS
    assert m["base_strategy"] == "vpt_deep" and m["variant"] == {}  # not a variant
    assert (m["task"], m["regime"], m["strategy"], m["backbone"], m["seed"]) == (
        "digits",
        "vtab1k",
        "vpt_deep",
        "mini_vit",
        5,
    )
    assert m["hparams"] == {"lr": 0.1, "wd": 0.001, "prompt_length": 2} and m["options"] == {
        "prompt_dropout": 0.0
    }
    assert m["lr_scaled"] == pytest.approx(0.1 * 8 / 256) and m["batch_size"] == 8
    assert (m["optimizer"], m["optimizer_behavior"]) == ("sgd", "vpt_code")
    assert (m["precision"], m["compile"], m["backbone_dropout"]) == ("fp32", False, 0.0)  # frozen: no dropout
    curves = read_csv(tmp / "c" / "seed5" / "curves.csv")
    evaluated = [r["test_top1"] != "" for r in curves]
    assert m["epochs"] == 3 and evaluated == [True, False, True]  # 2 curve points: the first and last epoch
    last = curves[-1]
    assert m["test_loss"] == pytest.approx(float(last["test_loss"])) and m["test_top1"] == pytest.approx(
        float(last["test_top1"])
    )
    assert m["train_loss"] == pytest.approx(float(last["train_loss"])) and m["train_top1"] == pytest.approx(
        float(last["train_top1"])
    )
    assert m["seconds"] > 0 and round(m["seconds"], 3) == m["seconds"]
    assert m["checkpoints"] >= 1 and m["checkpoint_bytes"] > 0
    backbone = sum(p.numel() for p in create_backbone("mini_vit", pretrained=False).parameters())
    assert (
        m["backbone_params"] == backbone and m["task_params"] == m["tuned"] < backbone
    )  # shares the backbone
    assert m["summary"] == {}
    manifest = read_manifest(tmp / "manifest.json")
    expected = {
        "config_hash": content_hash(spec),
        "seed": 5,
        "manifest": str(tmp / "manifest.json"),
        "manifest_sha256": manifest["sha256"],
        "backbone_checkpoint": str(tmp / "backbone.safetensors"),
        "start_from": None,
        "device": "cpu",
        "cuda_visible_devices": "3",
        "slurm_job_id": "4242",
        "python": platform.python_version(),
        "host": platform.node(),
        "packages": {"vptft": vptft.__version__, "torch": torch.__version__, "timm": timm.__version__},
    }
    provenance = dict(m["provenance"])
    commit, arithmetic = provenance.pop("git_commit"), provenance.pop("arithmetic")
    assert len(provenance.pop("run_key")) == 64  # sha256 of what makes the run (see the reuse test)
    assert provenance == expected
    from pathlib import Path

    repo = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(vptft.__file__).parent
    )
    assert commit == (repo.stdout.strip() if repo.returncode == 0 else None) and (
        commit is None or len(commit) == 40
    )
    assert arithmetic == reproducibility.facts()


def test_storage_and_dropout_of_strategies_that_train_or_continue_the_backbone(job_files):
    tmp, data_dir = job_files
    full = _spec("full", {"lr": [0.001], "wd": [0.01]}, data_dir)
    full["train"].update(backbone_dropout=0.1)
    _sweep(tmp, full, "full_bd")
    runs = run_final(
        full, tmp / "manifest.json", tmp / "backbone.safetensors", tmp / "full_bd_sweep.csv", tmp / "fbd", [0]
    )
    assert (
        runs[0]["backbone_dropout"] == 0.1
        and runs[0]["task_params"] == runs[0]["tuned"] > runs[0]["backbone_params"]
    )
    ftpt = _spec("ft_then_pt", {"lr": [0.1], "wd": [0.001], "prompt_length": [1]}, data_dir)
    start = {0: tmp / "fbd" / "seed0" / "tuned.safetensors"}
    rows = run_sweep_chunk(
        ftpt,
        tmp / "manifest.json",
        tmp / "backbone.safetensors",
        tmp / "ftpt_chunk0.csv",
        start_from=start[0],
    )
    merge_sweep([tmp / "ftpt_chunk0.csv"], tmp / "ftpt_sweep.csv", expected_points=len(rows))
    [m] = run_final(
        ftpt,
        tmp / "manifest.json",
        tmp / "backbone.safetensors",
        tmp / "ftpt_sweep.csv",
        tmp / "ftpt",
        [0],
        start_from=start,
    )
    # prompts + head of its own, on a finetuned backbone it must store too
    assert m["task_params"] == m["tuned"] + m["backbone_params"] and m["provenance"]["start_from"] == str(
        start[0]
    )
    assert m["backbone_dropout"] == 0.0  # its backbone is frozen


def test_stage1_evaluates_once_at_the_end(job_files):
    tmp, data_dir = job_files
    spec = _spec("full", {"lr": [0.001], "wd": [0.01]}, data_dir)
    spec["train"].update(epochs=3, min_steps=0)
    result = _stage1(tmp, spec, "once")
    assert ["val_top1" in row for row in result["curves"]] == [False, False, True]


def test_each_grid_point_starts_from_the_jobs_backbone_and_head_init(job_files):
    """A point that trains the backbone trains its own copy: the next point starts from the pre-trained weights."""
    tmp, data_dir = job_files
    spec = _spec("full", {"lr": [0.004, 0.01], "wd": [0.0]}, data_dir)
    spec["train"]["head_init"] = "zero"  # not the strategies' default ("vpt"): the job's setting reaches them
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    before = {k: v.clone() for k, v in job.backbone.state_dict().items()}
    for point in ({"lr": 0.004, "wd": 0.0}, {"lr": 0.01, "wd": 0.0}):
        assert not job.build(point, seed=0).head.weight.any()
    for _, model, _, _ in job.fit_points([{"lr": 0.004, "wd": 0.0}, {"lr": 0.01, "wd": 0.0}], seed=0):
        assert model.backbone is not job.backbone
    assert all(torch.equal(v, job.backbone.state_dict()[k]) for k, v in before.items())
    for k, v in model.backbone.state_dict().items():
        if v.is_floating_point() and not torch.equal(v, before[k]):
            break
    else:
        raise AssertionError("the point's own backbone did not train")


def test_heads_of_a_grid_share_the_backbone_and_its_features_once_per_job(job_files, monkeypatch):
    tmp, data_dir = job_files
    spec = _spec("linear", {"lr": [0.5, 2.0], "wd": [0.0]}, data_dir)
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    passes = []
    monkeypatch.setattr(job.backbone, "forward_features", _counting(job.backbone.forward_features, passes))
    points = [{"lr": 0.5, "wd": 0.0}, {"lr": 2.0, "wd": 0.0}]
    models = [model for _, model, _, _ in job.fit_points(points, seed=0)]
    assert all(model.backbone is job.backbone for model in models)  # frozen: one copy for the grid
    assert set(job.feature_cache) == {"train", "val"}
    first = len(passes)
    list(job.fit_points(points, seed=1))  # another chunk / seed of the same job: features from the cache
    assert len(passes) == first > 0
    final = job.build(points[0], seed=0)
    job.fit(final, "train", ["val"], job.fit_config(points[0], 0, len(job.split("train")), 1))
    assert len(passes) == first  # a single point of the job reuses them too


def _counting(forward, calls):
    def counted(x):
        calls.append(len(x))
        return forward(x)

    return counted


def test_a_variant_equal_to_a_finished_run_is_not_trained_twice(job_files, tmp_path, monkeypatch):
    """`vpt_deep[prompt_length=2]` at the lr `vpt_deep` selected with prompt length 2 is the same run: its final
    run is that run's files under the variant's name, and equals what training it would give."""
    tmp, data_dir = job_files
    base = _spec("vpt_deep", {"lr": [0.1], "wd": [0.0], "prompt_length": [2]}, data_dir)
    variant = _spec("vpt_deep[prompt_length=2]", {"lr": [0.1], "wd": [0.0]}, data_dir)
    _sweep(tmp, base, "reuse_base")
    _sweep(tmp, variant, "reuse_variant")
    files = (tmp / "manifest.json", tmp / "backbone.safetensors")
    runs = tmp_path / "runs"  # <task>/<regime>/<strategy>/seed<s> as the workflow lays them out
    [trained] = run_final(base, *files, tmp / "reuse_base_sweep.csv", runs / "vpt_deep", [0])
    alone = run_final(variant, *files, tmp / "reuse_variant_sweep.csv", tmp_path / "alone" / "v", [0])[0]
    assert alone["test_top1"] == trained["test_top1"]  # trained by itself: the same numbers
    assert alone["provenance"]["run_key"] == trained["provenance"]["run_key"]

    def no_training(*args, **kwargs):
        raise AssertionError("an equal finished run exists: nothing should train")

    monkeypatch.setattr(Job, "fit", no_training)
    [reused] = run_final(
        variant, *files, tmp / "reuse_variant_sweep.csv", runs / "vpt_deep[prompt_length=2]", [0]
    )
    assert reused["provenance"]["reused_from"] == str(runs / "vpt_deep" / "seed0")
    assert reused["strategy"] == "vpt_deep[prompt_length=2]" and reused["variant"] == {"prompt_length": 2}
    assert reused["hparams"] == {"lr": 0.1, "wd": 0.0} and reused["test_top1"] == trained["test_top1"]
    copied = runs / "vpt_deep[prompt_length=2]" / "seed0"
    assert (copied / "tuned.safetensors").read_bytes() == (
        runs / "vpt_deep/seed0/tuned.safetensors"
    ).read_bytes()
    with pytest.raises(AssertionError, match="nothing should train"):  # another seed is another run
        run_final(variant, *files, tmp / "reuse_variant_sweep.csv", runs / "vpt_deep[prompt_length=2]", [1])


def test_class_prototype_prompts_start_from_the_split_each_run_trains_on(job_files, monkeypatch):
    """The sweep's runs start from the train split's class means, the final runs from train + val's; a rebuilt
    run reads its prompts back from its weights."""
    from vptft.data import Normalize
    from vptft.strategies import prompts

    tmp, data_dir = job_files
    spec = _spec("vpt_deep[init=class_prototype]", {"lr": [0.1], "wd": [0.0]}, data_dir)
    seen = []
    real = prompts.class_prototypes
    monkeypatch.setattr(prompts, "class_prototypes", lambda *a, **k: seen.append(len(a[1])) or real(*a, **k))
    _sweep(tmp, spec, "proto")
    job = Job(spec, tmp / "manifest.json", tmp / "backbone.safetensors")
    model = job.build({"lr": 0.1, "wd": 0.0}, 0, train="trainval")
    data = job.split("trainval")
    normalize = Normalize(job.input_cfg["mean"], job.input_cfg["std"])
    expected = real(job.backbone, data.images, data.labels, 10, normalize, torch.device("cpu"))
    torch.testing.assert_close(model.prompts[2].detach(), expected)
    runs = tmp / "proto_runs"
    (metrics,) = run_final(
        spec, tmp / "manifest.json", tmp / "backbone.safetensors", tmp / "proto_sweep.csv", runs, [0]
    )
    assert seen == [16, 24, 24]  # train (sweep); train + val (the job above, the final run)
    assert metrics["tuned"] == 4 * 10 * 96 + 96 * 10 + 10  # ten classes: ten prompts per block
    from safetensors.torch import load_file

    rebuilt = load_trained(runs / "seed0", tmp / "backbone.safetensors", 10)
    saved = load_file(str(runs / "seed0" / "tuned.safetensors"))["prompts"]
    assert torch.equal(rebuilt.prompts.detach(), saved) and not torch.allclose(saved[2], expected)  # trained
