import copy
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from vptft.config import ConfigError, load_config, validate_config


def default_config():
    with open(f"{ROOT}/config/config.yaml") as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(f"{ROOT}/{path}")
    assert config["train"]["seeds"]


def test_defaults_are_filled():
    config = validate_config(default_config())
    assert config["train"]["sweep_chunk_size"] is None
    assert config["resources"]["default"]["gpu"] == 0


def _set(config, dotted, value):
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()
BAD = [
    ("bogus_key", 1, "$: Additional properties are not allowed ('bogus_key'"),
    ("train.batch_size", "64", "$.train.batch_size: '64' is not of type 'integer'"),
    ("train.seeds", [0, 1.5], "$.train.seeds[1]"),
    ("train.seeds", [], "$.train.seeds"),
    ("train.tpyo", 3, "$.train: Additional properties are not allowed ('tpyo'"),
    ("tasks", ["newshapes_src", "no_such_task"], "$.tasks[1]: unknown task 'no_such_task'"),
    ("tasks", ["cifar100"], "$.tasks[0]: task 'cifar100' belongs to benchmark 'vtab'"),
    ("strategies.warp_tuning", {"grid": {"lr": [1], "wd": [0]}}, "$.strategies.warp_tuning: unknown strategy"),
    ("strategies.full.grid.lr", [], "$.strategies.full.grid.lr"),
    ("strategies.full.grid.prompt_length", [5], "$.strategies.full.grid.prompt_length: 'full' has no"),
    ("strategies.vpt_deep.options.rank", 4, "$.strategies.vpt_deep.options.rank"),
    ("backbone", "resnet50", "$.backbone: 'resnet50' is not one of"),
    ("pretrain", DELETE, "$.pretrain: backbone 'mini_vit' is pre-trained by the workflow"),
    ("regimes.vtab1k.n_train", 900, "$.regimes.vtab1k.n_train: 900 exceeds"),
    ("tables.table1.groups", ["natural", "weird"], "$.tables.table1.groups[1]"),
    ("tables.table1.regime", "scale400", "$.tables.table1.regime: 'scale400' is not a configured regime"),
    ("train.normalization", "zscore", "$.train.normalization"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_config_is_refused_with_its_key(key, value, message):
    config = copy.deepcopy(default_config())
    _set(config, key, value)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    config = default_config()
    config["tasks"] = ["no_such_task"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-c1", "-s", f"{ROOT}/Snakefile", "-d",
                           str(tmp_path / "work"), f"--configfile={path}"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "$.tasks[0]: unknown task 'no_such_task'" in proc.stdout + proc.stderr
    assert not (tmp_path / "work" / "results").exists()
