"""Per-stage conda envs: they parse, their packages match pyproject's bounds, and every rule names one.
(CI cannot reach conda channels, so building them is left to `snakemake --sdm conda` on a user's machine.)"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

ENVS = sorted(Path(ROOT, "envs").glob("*.yaml"))
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?:[=><]=?\s*([0-9][0-9.]*))?")


def _pyproject_bounds():
    project = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {m.group(1).lower(): m.group(2) for m in map(REQUIREMENT.match, deps)}


def _pyproject_extra(name):
    extra = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]["optional-dependencies"][name]
    return {REQUIREMENT.match(d).group(1).lower() for d in extra}


def _env_requirements(env):
    for dep in env["dependencies"]:
        for item in dep["pip"] if isinstance(dep, dict) else [dep]:
            if item.startswith(("-e", "python=")) or item == "pip":
                continue
            match = REQUIREMENT.match(item)
            yield match.group(1).lower(), match.group(2)


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.stem)
def test_env_parses_and_matches_pyproject(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"] and env["dependencies"]
    pip = [item for d in env["dependencies"] if isinstance(d, dict) for item in d.get("pip", [])]
    assert any(re.fullmatch(r"-e \.\.\[[a-z,]+\]", item) for item in pip), (
        pip
    )  # vptft with its stage's extras
    bounds = _pyproject_bounds()
    for name, lower in _env_requirements(env):
        assert name in bounds, f"{path.name}: {name} is not a dependency in pyproject.toml"
        assert lower == bounds[name], f"{path.name}: {name}>={lower} but pyproject says >={bounds[name]}"


def test_every_rule_that_runs_code_names_an_env():
    checked = []
    for smk in Path(ROOT, "rules").glob("*.smk"):
        for name, body in re.findall(
            r"^(?:local)?rule (\w+):\n((?:    .*\n|\n)*)", smk.read_text(), re.MULTILINE
        ):
            if "shell:" in body or "script:" in body or "notebook:" in body:
                checked.append(name)
                match = re.search(r"conda:\n\s+\"(\.\./envs/\w+\.yaml)\"", body)
                assert match, f"rule {name} in {smk.name} names no conda env"
                assert (smk.parent / match.group(1)).resolve().exists(), match.group(1)
    assert {"download", "splits", "pretrain", "sweep", "select", "train", "table", "paper_name"} <= set(
        checked
    )
    rendered = re.search(  # the rule every rendered output (rules/outputs.smk) is made by
        r"^for rendered in RENDERED:\n\n    rule:\n((?:        .*\n|\n)*)",
        Path(ROOT, "rules", "report.smk").read_text(),
        re.MULTILINE,
    )
    assert rendered and re.search(r"conda:\n\s+\"\.\./envs/report\.yaml\"", rendered.group(1))


def test_data_env_has_what_preparing_tfds_needs():
    """The modules the download rule checks for (vptft.tasks.tfds_prepare) are in envs/data.yaml or the `data`
    extra it installs."""
    from vptft.tasks.tfds_prepare import NEEDS_MODULES, PIP_NAME

    env = dict(_env_requirements(yaml.safe_load(Path(ROOT, "envs/data.yaml").read_text())))
    modules = {"tensorflow", "importlib_resources"} | {m for ms in NEEDS_MODULES.values() for m in ms}
    data_extra = _pyproject_extra("data")
    for module in modules:
        assert PIP_NAME.get(module, module).lower() in env.keys() | data_extra, module
