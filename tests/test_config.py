import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from overlays import SMOKE_SIZE_KEYS, leaves, merged, size_changes
from vptft.config import ConfigError, load_config, validate_config


def default_config():
    with open(f"{ROOT}/config/config.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(f"{ROOT}/{path}")
    assert config["train"]["seeds"]


# What config/mini-full.yaml may change in the default config: sizes only (the smoke overlay's keys and these)
MINI_FULL_SIZE_KEYS = [
    *SMOKE_SIZE_KEYS,
    ("pretrain", "epochs"),
    ("backbones", "*", "pretrain", "epochs"),
    ("train", "min_steps"),
    ("regimes", "*", "tasks"),
]


def test_mini_full_overlay_changes_only_sizes_and_only_adds():
    default = dict(leaves(merged(f"{ROOT}/config/config.yaml")))
    full = dict(leaves(merged(f"{ROOT}/config/config.yaml", f"{ROOT}/config/mini-full.yaml")))
    for path in size_changes(default, full, MINI_FULL_SIZE_KEYS):
        if isinstance(default[path], list):  # more tasks, seeds, grid points: every default one kept
            assert set(default[path]) < set(full[path]), path
        else:
            assert full[path] > default[path], path
    validate_config(merged(f"{ROOT}/config/config.yaml", f"{ROOT}/config/mini-full.yaml"))


def test_defaults_are_filled():
    config = validate_config(default_config())
    assert config["train"]["sweep_chunk_size"] is None
    assert config["analyses"]["claims"]["alpha"] == 0.05 and config["regimes"]["fewshot"]["seed"] == 0
    assert config["tables"]["table1"]["tasks"] is None  # a default behind a $ref is filled in too


BAD_CONFIGS = sorted((Path(__file__).parent / "data" / "bad_configs").glob("*.yaml"))


def _expected(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


def test_there_are_enough_malformed_configs():
    assert len(BAD_CONFIGS) >= 15


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_is_refused_with_its_key(path):
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _expected(path) in str(err.value)


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_snakemake_refuses_bad_config_before_any_job(path, tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-c1",
            "-s",
            f"{ROOT}/Snakefile",
            "-d",
            str(work),
            f"--configfile={path}",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert _expected(path) in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


def test_gpu_resources_on_a_local_run_without_gpu_are_refused(tmp_path, monkeypatch):
    from vptft import config as config_module

    monkeypatch.setattr(config_module, "gpus_visible", lambda: False)
    paper = load_config(f"{ROOT}/config/paper.yaml")
    with pytest.raises(ConfigError, match=r"\$\.resources\.train\.gpu: 1 GPU\(s\) per job requested"):
        config_module.check_local_resources(paper)
    config_module.check_local_resources(load_config(f"{ROOT}/config/config.yaml"))  # the mini config: fine


def test_local_paper_run_without_gpu_stops_before_any_job(tmp_path):
    from vptft.config import gpus_visible

    if gpus_visible():
        pytest.skip("this machine has a GPU: a local GPU run is legitimate here")
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-c1",
            "-s",
            f"{ROOT}/Snakefile",
            "-d",
            str(work),
            f"--configfile={ROOT}/config/paper.yaml",
            "results/table2.csv",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "$.resources.train.gpu" in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


def _without_vpt(config):
    for name in ("vpt_deep", "ft_then_pt", "vpt_deep[location=add]"):
        config["strategies"].pop(name, None)
    config["regimes"]["vtab1k"]["strategies"] = ["full", "linear"]
    config["tables"] = {"table1": {**config["tables"]["table1"], "strategies": None}}
    config.pop("figures", None)
    config["analyses"].pop("hparams", None)
    config["analyses"].pop("ensemble", None)
    config["analyses"].pop("tsne", None)
    config["regimes"].pop("scaling"), config["regimes"].pop("fewshot")
    config["analyses"].pop("attribution")
    return config


def _one_seed(config):
    config["train"]["seeds"] = [0]
    config["analyses"]["ensemble"].pop("strategies")
    return config


def _without_attribution(config):
    config["analyses"].pop("attribution")
    return config


NOT_MAKEABLE = {  # output -> (config change, what the refusal says)
    "results/mini/figure3.png": (_without_vpt, "compares full finetuning with VPT on vtab1k"),
    "results/mini/claims.md": (_without_vpt, "add them to `strategies` and `regimes.vtab1k.strategies`"),
    "results/mini/figure8.png": (
        _without_attribution,
        "no task to explain: set `analyses.attribution.tasks`",
    ),
    "results/mini/table9.csv": (
        lambda c: c,
        "no table 'table9' in this config's `tables` (configured: table1",
    ),
    "results/table9.csv": (lambda c: c, "results/mini/table9.csv: no table 'table9'"),
    "results/vpt_figure15.png": (_one_seed, "no vtab1k strategy has two or more seeds to ensemble"),
}


@pytest.mark.parametrize("target", NOT_MAKEABLE)
def test_an_output_the_config_cannot_make_is_refused_before_any_job(target, tmp_path):
    change, message = NOT_MAKEABLE[target]
    with open(f"{ROOT}/.test/config/config.yaml") as f:
        config = change(yaml.safe_load(f))
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "snakemake", "-c1", "-s", f"{ROOT}/Snakefile", "-d", str(work)]
    proc = subprocess.run([*cmd, target, f"--configfile={configfile}"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert not (work / "results").exists() and not (work / "resources").exists()  # no job ran
