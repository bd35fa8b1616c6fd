"""`vptft bench` on the mini ViT with one repeat: the files it writes and that every ratio is a number (no
timing assertions: times on a shared machine say nothing)."""

import math

import pandas as pd
import pytest
import torch

from conftest import ROOT
from vptft import bench, cli


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the bench reads the workflow's configs
        cli.main(
            [
                "bench",
                "--backbones",
                "mini_vit",
                "--batch",
                "8",
                "--repeats",
                "1",
                "--out",
                str(out / "bench.csv"),
                "--steps-out",
                str(out / "steps.csv"),
            ]
        )
    return pd.read_csv(out / "bench.csv"), pd.read_csv(out / "steps.csv")


def test_result_rows_compare_each_target_with_a_positive_finite_ratio(bench_files):
    rows, _ = bench_files
    assert tuple(rows.columns) == bench.ROW_COLUMNS
    targeted = rows[rows.target.notna()].set_index("measure")
    assert set(targeted.index) == {
        "full_step_vs_plain_timm",
        "vpt_deep_p1_vs_token_ratio",
        "vpt_deep_p50_vs_token_ratio",
        "vpt_deep_p200_vs_token_ratio",
        "linear_grid_vs_feature_pass",
    }
    assert (targeted.backbone == "mini_vit").all() and (targeted.device == "cpu").all()
    for measure, row in targeted.iterrows():
        assert math.isfinite(row.ratio) and row.ratio > 0, measure
        assert row.ratio == pytest.approx(row.value / row.reference)
        assert bool(row.met) == (row.ratio <= float(row.target.split("<=")[1])), measure
    # the token ratio of the mini ViT's 16 patches at p = 200
    assert targeted.loc["vpt_deep_p200_vs_token_ratio", "note"].endswith(f"x{217 / 17:.3f}")
    assert (rows.threads == torch.get_num_threads()).all()
    if not torch.cuda.is_available():
        assert "no GPU on this machine" in set(rows.note)


def test_checkpoint_size_is_reported_per_strategy(bench_files):
    from vptft.backbones.factory import create_backbone

    rows, _ = bench_files
    sizes = rows.set_index("measure").value
    params = sum(p.numel() for p in create_backbone("mini_vit", pretrained=False).parameters())
    # full: every weight and AdamW's two moments, float32; linear: the head only; VPT: prompts + head + SGD momentum
    assert 3 * 4 * params <= sizes["checkpoint_mb_full"] * 1e6 <= 3.3 * 4 * params
    assert (
        0 < sizes["checkpoint_mb_linear"] < sizes["checkpoint_mb_vpt_deep"] < sizes["checkpoint_mb_full"] / 10
    )


def test_step_times_hold_every_strategy_and_prompt_length(bench_files):
    _, steps = bench_files
    assert tuple(steps.columns) == bench.STEP_COLUMNS
    assert [(s, None if math.isnan(p) else int(p)) for s, p in zip(steps.strategy, steps.prompt_length)] == [
        ("full", None),
        ("linear", None),
        ("vpt_deep", 1),
        ("vpt_deep", 50),
        ("vpt_deep", 200),
    ]
    assert (steps.batch_size == 8).all()
    for column in ("ms_per_image_train", "ms_per_image_eval"):
        assert steps[column].map(math.isfinite).all() and (steps[column] > 0).all(), column


def test_copies_side_by_side_give_each_step_time_its_median(tmp_path):
    from vptft import cost

    files = []
    for i, full in enumerate((3.0, 1.0, 2.0)):  # three copies of the bench, run at once
        rows = [{"backbone": "mini_vit", "strategy": "full", "prompt_length": None, "batch_size": 64}]
        rows += [{"backbone": "mini_vit", "strategy": "vpt_deep", "prompt_length": 1, "batch_size": 64}]
        frame = pd.DataFrame(rows).assign(device="cpu", ms_per_image_train=[full, 10 * full], concurrent=1)
        files.append(tmp_path / f"steps{i}.csv")
        frame.assign(ms_per_image_eval=0.5 + i)[list(bench.STEP_COLUMNS)].to_csv(files[-1], index=False)
    merged = bench.median_step_times(files)
    assert tuple(merged.columns) == bench.STEP_COLUMNS and (merged.concurrent == 3).all()
    assert merged.ms_per_image_train.tolist() == [2.0, 20.0] and (merged.ms_per_image_eval == 1.5).all()
    merged.to_csv(tmp_path / "merged.csv", index=False)
    times = cost.read_step_times(tmp_path / "merged.csv", "mini_vit")
    assert times.ms("train", "full") == 2.0 and "3 bench copies side by side" in times.source


def test_job_count_reads_the_dry_run_total():
    output = (
        "Building DAG of jobs...\nJob stats:\njob         count\n--------  -------\nall             1\n"
        "train          12\ntotal          13\n\nReasons:\n    total 5 reasons\n"
    )
    assert bench.job_count(output) == 13
    with pytest.raises(ValueError, match="Job stats"):
        bench.job_count("Nothing to be done.")


def test_gpu_peak_prefers_the_specific_name():
    assert bench.gpu_peak("NVIDIA H100 PCIe") == 756e12
    assert bench.gpu_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.gpu_peak("NVIDIA L40S") == 362e12 and bench.gpu_peak("NVIDIA L4") == 121e12
    assert bench.gpu_peak("Some GPU") is None


def test_forward_flops_count_attention(mini_vit):
    # patch embedding + 4 blocks of qkv / proj / MLP matmuls on 17 tokens, plus attention's two N x N matmuls
    n, d, depth = 17, 96, 4
    expected = 2 * 16 * d * 3 * 64 + depth * (2 * n * 12 * d * d + 4 * n * n * d)
    assert bench.forward_flops(mini_vit, (32, 32), torch.device("cpu")) == expected
