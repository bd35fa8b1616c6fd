"""The VPT paper's Table 12 and Figures 18-19: cost measured per strategy and prompt length."""

from pathlib import Path

import pandas as pd
import pytest

from vptft.latency import COLUMNS, measure_all, settings

SPEC = {
    "backbone": "mini_vit",
    "normalization": "backbone",
    "strategies": ["linear", "vpt_deep", "vpt_prefix"],
    "prompt_lengths": [1, 8],
    "batch_size": 8,
    "repeats": 1,
    "device": "cpu",
    "precision": "fp32",
    "threads": 1,
    "options": {},
}


PEAK_MEMORY_PROBE = """
import torch
from vptft.latency import PeakMemory
held = torch.ones(4 * 2**20)  # 16 MB held before: not counted
with PeakMemory(torch.device("cpu")) as peak:
    x = torch.ones(16 * 2**20)  # 64 MB
    x += 1
    del x
print(peak.mb)
"""


def test_peak_memory_sees_what_is_allocated_inside_it_and_not_before():
    """In a fresh interpreter, as the latency job measures each setting: in a long-lived one (a pytest worker) a
    64 MB tensor can land in memory an earlier test freed but the process kept, which no RSS measure sees."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_PROBE], capture_output=True, text=True, check=True
    )
    mb = float(out.stdout.split()[-1])
    assert 50 < mb < 200, mb


def test_each_prompt_method_is_measured_at_every_length_and_the_others_once():
    assert settings(SPEC) == [
        ("linear", None),
        ("vpt_deep", 1),
        ("vpt_deep", 8),
        ("vpt_prefix", 1),
        ("vpt_prefix", 8),
    ]


def test_measured_costs_grow_with_the_prompt_and_prefix_prompts_cost_less_at_inference(tmp_path):
    from vptft.figures import cost_figures

    table = pd.DataFrame(measure_all(SPEC), columns=COLUMNS).set_index(["strategy", "prompt_length"])
    assert (table[["train_ms_per_image", "test_ms_per_image", "gflops_per_image"]] > 0).all().all()
    assert table.cached_features[("linear", None)] and not table.cached_features[("vpt_deep", 1)]
    gflops = table.gflops_per_image
    assert gflops[("vpt_deep", 8)] > gflops[("vpt_deep", 1)] > gflops[("linear", None)]
    # prefix prompts join keys and values only: fewer tokens flow through the MLPs than VPT-deep's
    assert gflops[("vpt_prefix", 8)] < gflops[("vpt_deep", 8)]
    assert table.tuned_params[("vpt_prefix", 8)] == table.tuned_params[("vpt_deep", 8)]  # same prompt tensors
    assert table.train_peak_mb[("vpt_deep", 8)] > 0 and table.memory_measure.eq("peak RSS (VmHWM)").all()
    table = table.reset_index()
    table["prompt_length"] = table.prompt_length.astype("Int64")
    cost_figures(table, tmp_path / "18.png", tmp_path / "19.png")
    assert (tmp_path / "18.png").stat().st_size > 0 and (tmp_path / "19.png").stat().st_size > 0


def test_an_unknown_strategy_to_measure_is_refused_with_its_key():
    import copy

    import yaml

    from conftest import ROOT
    from vptft.config import ConfigError, validate_config

    config = yaml.safe_load(Path(ROOT, "config", "config.yaml").read_text())
    config["analyses"]["cost"] = {"strategies": ["full", "vpt_dep"]}
    with pytest.raises(ConfigError, match=r"\$\.analyses\.cost\.strategies\[1\]: unknown strategy 'vpt_dep'"):
        validate_config(copy.deepcopy(config))
