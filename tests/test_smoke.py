"""The smoke overlay (config/smoke.yaml): it changes only sizes of config/paper.yaml, and the paper path runs
with it end to end - the real TFDS builder on an offline RESISC45 folder, a ViT-B/16 checkpoint in the orig_in21k
architecture loaded through `backbone_checkpoint`, sweep, selection, stage 1, final runs, collection, Table 1 -
and learns: each class of the offline images has its own colour, so a strategy that trains ends far above chance.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from overlays import SMOKE_SIZE_KEYS, is_size_key, leaves, merged, size_changes

PAPER, SMOKE = f"{ROOT}/config/paper.yaml", f"{ROOT}/config/smoke.yaml"


def test_smoke_overlay_changes_only_sizes():
    paper, smoke = dict(leaves(merged(PAPER))), dict(leaves(merged(PAPER, SMOKE)))
    for path in size_changes(paper, smoke, SMOKE_SIZE_KEYS):
        if path[0] == "strategies":  # fewer grid points, each one of the paper's own (same value and type)
            assert len(smoke[path]) <= len(paper[path])
            assert all(any(v == w and type(v) is type(w) for w in paper[path]) for v in smoke[path]), path
        if path[0] == "train" and path[1] == "epochs":
            assert smoke[path] >= 3, "the first epoch is the warm-up at lr 0: a smoke run must train after it"


def test_a_change_outside_sizes_is_caught():
    assert not is_size_key(("train", "batch_size"), SMOKE_SIZE_KEYS)
    assert not is_size_key(("strategies", "full", "batch_size"), SMOKE_SIZE_KEYS)
    assert is_size_key(("strategies", "vpt_deep", "grid", "prompt_length"), SMOKE_SIZE_KEYS)


CLASSES = 5  # of RESISC45's 45: each gets one colour
RESISC45_FIRST_CLASSES = ["airplane", "airport", "baseball_diamond", "basketball_court", "beach"]
TEST_IMAGES = 10  # the VTAB test slice of RESISC45 is train[25200:]


def fake_resisc45(data_dir):
    """NWPU-RESISC45/<class>/*.jpg as TFDS's builder reads it: 25,200 + TEST_IMAGES small JPEGs, a colour per
    class plus noise."""
    from PIL import Image

    from vptft.tasks import tfds_prepare

    names = RESISC45_FIRST_CLASSES  # TFDS's label names; read without TensorFlow in this process (see below)
    root = tfds_prepare.manual_dir(data_dir) / "NWPU-RESISC45"
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(CLASSES, 3))
    for i in range(25200 + TEST_IMAGES):
        label = i % CLASSES
        (root / names[label]).mkdir(parents=True, exist_ok=True)
        pixels = np.clip(colours[label] + rng.normal(0, 12, size=(16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / names[label] / f"{names[label]}_{i}.jpg", quality=90)


def vit_b16_checkpoint(path):
    """Random weights in the orig_in21k architecture, saved as a user's downloaded weights would be."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224.orig_in21k", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.mark.workflow
def test_smoke_pass_runs_the_paper_path_and_learns(tmp_path):
    # TensorFlow is imported only by the workflow's own jobs: in one process with torch's triton it can crash
    assert importlib.util.find_spec("tensorflow"), "preparing TFDS data needs the data extra (.[all])"
    data_dir = tmp_path / "data"
    vit_b16_checkpoint(tmp_path / "vit_b16.safetensors")
    fake_resisc45(data_dir)
    # This machine: the one offline task (so only the tables with a specialized task), local files, the CPU.
    config = merged(PAPER, SMOKE)
    config.update(
        tasks=["resisc45"], data_dir=str(data_dir), backbone_checkpoint=str(tmp_path / "vit_b16.safetensors")
    )
    config["train"]["device"] = "cpu"
    # Only the specialized group has a task here: a group without one is refused, so each table keeps that group.
    config["tables"] = {
        name: {**entry, "groups": ["specialized"]}
        for name, entry in config["tables"].items()
        if "specialized" in entry["groups"] and name != "table20"
    }
    config["analyses"]["curves"]["tasks"] = ["resisc45"]
    config["analyses"]["attribution"].update(tasks=["resisc45"], quadrant_tasks=["resisc45"])
    config["resources"].update(train={"gpu": 0, "threads": 1}, analysis={"gpu": 0, "threads": 1})
    configfile = tmp_path / "smoke_here.yaml"
    configfile.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-c2",
        "-s",
        f"{ROOT}/Snakefile",
        "-d",
        str(work),
        f"--configfile={configfile}",
        "results/table1.csv",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = pd.read_csv(work / "results/table1.csv", index_col="strategy")
    paper_rows = yaml.safe_load(Path(PAPER).read_text())["regimes"]["vtab1k"]["strategies"]
    assert set(table.index) == set(paper_rows)  # Tables 1-2's five rows, FT-then-PT through its stage 1
    chance = 100.0 / CLASSES
    assert (table["resisc45"] >= 2 * chance).all(), table["resisc45"]  # every strategy learned the colours
    runs = pd.concat(
        map(pd.read_csv, (work / "results/vtab/collected/vit_b16_in21k/vtab1k/resisc45").glob("*.csv"))
    )
    assert set(runs.strategy) == set(paper_rows) and (runs.seed == 0).all()
    assert (runs.epochs == 4).all() and runs.lr.notna().all()
    assert (work / "results/vtab/runs/vit_b16_in21k/resisc45/vtab1k/full/stage1.safetensors").is_file()
