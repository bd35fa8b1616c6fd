"""Result files say which benchmark, backbone and config made them; an unqualified name (results/table1.csv)
never keeps another config's file, whatever the rerun triggers or mtimes."""

from __future__ import annotations

import copy
import filecmp
import json
import os
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

from conftest import ROOT, reduced_test_config
from test_report import _runs
from vptft import claims, figures, provenance, report
from vptft.config import validate_config

MINI = {"benchmark": "mini", "backbone": "mini_vit", "config_hash": "a" * 64}
PAPER = {"benchmark": "vtab", "backbone": "vit_b16_in21k", "config_hash": "b" * 64}


def test_tables_and_their_spread_carry_the_stamp_as_trailing_columns(tmp_path):
    runs = _runs({("source", "full"): [40, 50], ("source", "vpt_deep"): [60, 62]})
    table, spread = report.study_table(runs, "vtab1k", ["natural"], ["source"], ["full", "vpt_deep"])
    report.write_table(table, runs, tmp_path / "table1.csv", spread, stamp=MINI)
    for name in ("table1.csv", "table1_std.csv"):
        assert provenance.read(tmp_path / name) == MINI, name
    read = pd.read_csv(tmp_path / "table1.csv", index_col="strategy")  # as the tests and notebooks read it
    assert list(read.columns[-3:]) == list(provenance.FIELDS) and read.loc["vpt_deep", "source"] == 61
    assert list(read.columns[:-3]) == list(table.columns)
    report.write_csv(table, tmp_path / "unstamped.csv")
    assert provenance.read(tmp_path / "unstamped.csv") is None


def test_a_stamped_fid_table_reads_as_before_for_the_claims(tmp_path):
    fid = pd.DataFrame(
        {"fid_mean": [1.0, 9.0, 3.0], "task_disparity": ["low", "low", "high"]},
        index=pd.Index(["source", "newshapes_sketch", "count_src"], name="task"),
    )
    report.write_csv(fid, tmp_path / "fid.csv", stamp=PAPER)
    read = pd.read_csv(tmp_path / "fid.csv", index_col="task")  # the claims notebook's reader
    assert provenance.read(tmp_path / "fid.csv") == PAPER
    assert claims.quadrants(read).equals(claims.quadrants(fid))
    with pytest.raises(ValueError, match="hide its provenance"):
        report.write_csv(read, tmp_path / "again.csv", stamp=PAPER)


def test_figures_carry_the_stamp_as_png_text(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    figures.save(fig, tmp_path / "figure4.png", stamp=PAPER)
    assert provenance.read(tmp_path / "figure4.png") == PAPER
    fig, _ = plt.subplots()
    figures.save(fig, tmp_path / "plain.png")
    assert provenance.read(tmp_path / "plain.png") is None


def test_the_claims_report_carries_the_stamp_in_both_files(tmp_path):
    table = pd.DataFrame({"claim": ["C1"], "status": ["supported"], "p_value": [0.01234567]})
    md = "# Claims of the study\n\nbody\n"
    claims.write(table, md, tmp_path / "claims.csv", tmp_path / "claims.md", stamp=MINI)
    assert provenance.read(tmp_path / "claims.csv") == MINI == provenance.read(tmp_path / "claims.md")
    first, rest = (tmp_path / "claims.md").read_text().split("\n", 1)
    assert first.startswith("<!--") and first.endswith("-->") and rest == md  # hidden when rendered
    assert pd.read_csv(tmp_path / "claims.csv").p_value[0] == 0.0123
    with pytest.raises(ValueError, match="no provenance stamp"):
        provenance.read(tmp_path / "claims.ipynb")


def test_the_config_hash_changes_with_any_config_value():
    config = reduced_test_config(["newshapes_src"], ["linear"])
    validate_config(config)
    changed = copy.deepcopy(config)
    changed["train"]["seeds"] = [0]
    stamp = provenance.of_config(config)
    assert (
        stamp["benchmark"] == "mini" and stamp["backbone"] == "mini_vit" and len(stamp["config_hash"]) == 64
    )
    assert provenance.of_config(changed)["config_hash"] != stamp["config_hash"]


def test_a_foreign_unqualified_file_is_noted_newer_than_it_and_a_copy_is_not(tmp_path):
    source, alias, note = tmp_path / "mini/table1.csv", tmp_path / "table1.csv", tmp_path / "mini/.note.json"
    source.parent.mkdir()
    report.write_csv(pd.DataFrame({"source": [50.0]}), source, stamp=MINI)
    assert provenance.note_foreign_copy(alias, source, note) is None  # nothing there yet
    alias.write_bytes(source.read_bytes())
    assert (
        provenance.note_foreign_copy(alias, source, note) is None and not note.exists()
    )  # a copy: left alone
    report.write_csv(pd.DataFrame({"cifar100": [80.0]}), alias, stamp=PAPER)
    future = time.time() + 86400  # copied from a machine whose clock runs a day ahead
    os.utime(alias, (future, future))
    found = provenance.note_foreign_copy(alias, source, note)
    assert found["found"] == PAPER and json.loads(note.read_text()) == found
    assert note.stat().st_mtime > alias.stat().st_mtime  # so Snakemake sees a changed input of the copy
    first = note.read_bytes()
    provenance.note_foreign_copy(alias, source, note)
    assert note.read_bytes() != first  # each note differs from any earlier one (checksums cannot match)


def _snakemake(work, configfile, *args):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-c1",
        "-s",
        f"{ROOT}/Snakefile",
        "-d",
        str(work),
        *args,
        "results/table1.csv",
        f"--configfile={configfile}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def _paper_like_config() -> dict:
    """config/paper.yaml cut down to one task, the linear probe and Table 1 (its table is written by hand)."""
    with open(os.path.join(ROOT, "config", "paper.yaml")) as f:
        config = yaml.safe_load(f)
    config.update(
        tasks=["cifar100"],
        strategies={"linear": config["strategies"]["linear"]},
        tables={"table1": {"regime": "vtab1k", "groups": ["natural"]}},
        regimes={"vtab1k": {"n_train": 800, "n_val": 200}},
    )
    for key in ("analyses", "resources"):  # no FID / attribution; no GPU asked of this machine
        config.pop(key)
    return config


@pytest.mark.workflow
@pytest.mark.parametrize("triggers", [[], ["--rerun-triggers=mtime"]], ids=["default-triggers", "mtime"])
def test_switching_benchmarks_recopies_the_unqualified_table(tmp_path, triggers):
    """mini -> paper -> mini: each run leaves its own benchmark's Table 1 under results/table1.csv. The per-benchmark
    tables are written by hand before any run (older than every copy), so mtimes alone would leave the first copy.
    """
    work = tmp_path / "work"
    configs = {"mini": reduced_test_config(["newshapes_src"], ["linear"]), "vtab": _paper_like_config()}
    stamps = {}
    for bench, config in configs.items():
        (tmp_path / f"{bench}.yaml").write_text(yaml.safe_dump(config))
        validated = copy.deepcopy(config)
        validate_config(validated)
        stamps[bench] = provenance.of_config(validated)
        table = pd.DataFrame(
            {config["tasks"][0]: [50.0 if bench == "mini" else 80.0]},
            index=pd.Index(["linear"], name="strategy"),
        )
        report.write_csv(table, work / "results" / bench / "table1.csv", stamp=stamps[bench])
    alias = work / "results/table1.csv"
    for step, bench in enumerate(("mini", "vtab", "mini")):
        configfile = tmp_path / f"{bench}.yaml"
        if step:
            other = "vtab" if bench == "mini" else "mini"
            if step == 2:  # results copied from another machine: any mtime, here a day ahead
                future = time.time() + 86400
                os.utime(alias, (future, future))
            dry = _snakemake(work, configfile, "-n", *triggers)
            assert dry.returncode == 0, dry.stderr[-3000:]
            assert "rule paper_name:" in dry.stdout, dry.stdout[-3000:]
            assert f"results/table1.csv holds {other} / " in dry.stderr
        run = _snakemake(work, configfile, *triggers)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert provenance.read(alias) == stamps[bench] and provenance.read(alias)["benchmark"] == bench
        assert filecmp.cmp(alias, work / "results" / bench / "table1.csv", shallow=False)
        again = _snakemake(work, configfile, "-n", *triggers)
        assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def test_a_mini_table_copied_into_a_fresh_checkout_is_replaced_by_the_paper_config(tmp_path):
    """The sequence a user meets: a fresh checkout (no .snakemake/ metadata, no results/vtab/), a mini
    results/table2.csv copied in, then the paper config's dry run of results/table2.csv."""
    work = tmp_path / "fresh"
    table = pd.DataFrame({"count_src": [40.0]}, index=pd.Index(["full"], name="strategy"))
    report.write_csv(table, work / "results/table2.csv", stamp=MINI)
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", f"{ROOT}/Snakefile", "-d", str(work)]
    dry = subprocess.run(
        [*cmd, "results/table2.csv", f"--configfile={ROOT}/config/paper.yaml"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" not in dry.stdout + dry.stderr
    assert "rule paper_name:" in dry.stdout and "rule table:" in dry.stdout
    assert "results/table2.csv holds mini / mini_vit / " in dry.stderr
    assert not (work / ".snakemake" / "metadata").exists() or not any(
        (work / ".snakemake/metadata").iterdir()
    )
