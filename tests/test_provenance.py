"""Result files say which benchmark, backbone and config made them."""

from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from conftest import reduced_test_config
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
    fid = pd.DataFrame({"fid_mean": [1.0, 9.0, 3.0], "task_disparity": ["low", "low", "high"]},
                       index=pd.Index(["source", "newshapes_sketch", "count_src"], name="task"))
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
    assert stamp["benchmark"] == "mini" and stamp["backbone"] == "mini_vit" and len(stamp["config_hash"]) == 64
    assert provenance.of_config(changed)["config_hash"] != stamp["config_hash"]
