"""End to end: the reduced mini config through the real Snakefile, rules and CLI (about two minutes)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from vptft import provenance

pytestmark = pytest.mark.workflow


def snakemake(*args, cwd=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", f"{ROOT}/Snakefile", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    proc = snakemake("-c2", "-d", str(work), f"--configfile={ROOT}/.test/config/config.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work


STUDY_FIRST = ["full", "vpt_deep", "mixed", "ft_then_pt", "linear"]  # the study's rows, then the others


VARIANT = "vpt_deep[location=add]"  # table1 names it besides the vtab1k family's strategies


def test_tables_are_produced_with_every_strategy(workdir):
    for name, task, rows in (
        ("table1", "newshapes_src", [*STUDY_FIRST, VARIANT]),
        ("table2", "count_sketch", STUDY_FIRST),
    ):
        table = pd.read_csv(workdir / "results" / f"{name}.csv", index_col="strategy")
        assert list(table.index) == rows
        assert table[task].between(0, 100).all()
        assert (table["seeds"] == 2).all()
        assert (
            table.loc[["full", "mixed"], "tuned_pct"].eq(100.0).all() and table.loc["linear", "tuned_pct"] < 1
        )
        wins = [c for c in table.columns if c.startswith("wins_")]
        assert len(wins) == 1 and pd.isna(table.loc["full", wins[0]])
        assert table.loc[rows[1:], wins[0]].between(0, 1).all()
        runs = pd.read_csv(workdir / "results" / "mini" / f"{name}_runs.csv")
        assert len(runs) == len(rows) * 2  # strategies x seeds, one task per table
        mean = runs[runs.strategy == "vpt_deep"].test_top1.mean()
        assert table.loc["vpt_deep", task] == pytest.approx(mean, abs=0.01)
        assert (workdir / "results" / "mini" / f"{name}.ipynb").stat().st_size > 1000


def test_a_variant_trains_and_is_collected_under_its_name(workdir):
    """The variant trains as its base strategy with its option fixed, is recorded as such and is a table row."""
    run = workdir / "results/mini/runs/mini_vit/newshapes_src/vtab1k" / VARIANT
    metrics = json.loads((run / "seed0/metrics.json").read_text())
    assert metrics["strategy"] == VARIANT and metrics["base_strategy"] == "vpt_deep"
    assert metrics["variant"] == {"location": "add"} and metrics["seed"] == 0
    assert (
        metrics["tuned"] == 4 * 17 * 96 + 96 * 8 + 8
    )  # a prompt per token (CLS + 16 patches), 4 blocks; head
    runs = pd.read_csv(workdir / "results" / "mini" / "table1_runs.csv")
    row = runs[runs.strategy == VARIANT].iloc[0]
    assert row.base_strategy == "vpt_deep" and json.loads(row.variant) == {"location": "add"}
    assert not (workdir / "results/mini/runs/mini_vit/count_sketch/vtab1k" / VARIANT).exists()  # table1 only
    ablation = pd.read_csv(workdir / "results" / "mini" / "vpt_figure5.csv")  # VPT vs the variant, a figure
    assert list(ablation.strategy.unique()) == ["vpt_deep", VARIANT]
    assert list(ablation.task.unique()) == ["newshapes_src", "mean"] and (ablation.seeds == 2).all()
    table = pd.read_csv(workdir / "results" / "table1.csv", index_col="strategy")
    mine = ablation[ablation.task == "newshapes_src"].set_index("strategy").top1
    assert mine.to_dict() == pytest.approx(
        table.loc[["vpt_deep", VARIANT], "newshapes_src"].to_dict(), abs=0.01
    )
    assert (workdir / "results" / "vpt_figure5.png").stat().st_size > 5000


def test_the_hparams_figure_reads_every_sweep_point(workdir):
    points = pd.read_csv(workdir / "results" / "mini" / "vpt_figure17.csv", comment="#")
    sweeps = workdir / "results/mini/runs/mini_vit/newshapes_src/vtab1k"
    for strategy in STUDY_FIRST:
        sweep = pd.read_csv(sweeps / strategy / "sweep.csv")
        mine = points[points.strategy == strategy]
        # the CSV keeps 2 decimals
        assert list(mine.val_top1) == pytest.approx(list(sweep.val_top1), abs=0.01)
        assert mine.selected.sum() == 1
    assert (workdir / "results" / "vpt_figure17.png").stat().st_size > 5000


def test_vpt_table1_counts_parameters_of_all_tasks_in_backbones(workdir):
    table = pd.read_csv(workdir / "results" / "vpt_table1.csv", index_col="strategy")
    assert list(table.index) == STUDY_FIRST and (table["tasks"] == 2).all()
    assert {"mean_natural", "wins_natural", "mean_structured", "wins_structured"} <= set(table.columns)
    # full, Mixed and FT-then-PT keep a backbone per task (2 tasks), linear shares one
    assert table.loc["full", "total_params_x"] == pytest.approx(2.0, abs=0.01)
    assert table.loc["ft_then_pt", "total_params_x"] > table.loc["full", "total_params_x"] > 1.9
    assert table.loc["linear", "total_params_x"] == pytest.approx(1.0, abs=0.01)  # 2 heads on one backbone


def test_ft_then_pt_continued_each_seed_of_the_full_run(workdir):
    runs = workdir / "results/mini/runs/mini_vit/count_sketch/vtab1k"
    for seed in (0, 1):
        metrics = json.loads((runs / f"ft_then_pt/seed{seed}/metrics.json").read_text())
        assert metrics["provenance"]["start_from"].endswith(f"full/seed{seed}/tuned.safetensors")
    assert (runs / "full/stage1.safetensors").is_file()


def test_run_files_follow_the_contract(workdir):
    run = workdir / "results/mini/runs/mini_vit/newshapes_src/vtab1k/vpt_deep"
    sweep = pd.read_csv(run / "sweep.csv")
    assert sweep.selected.sum() == 1 and {"lr", "wd", "prompt_length", "val_top1"} <= set(sweep.columns)
    metrics = json.loads((run / "seed1/metrics.json").read_text())
    assert metrics["seed"] == 1 and metrics["n_train"] == 96 and metrics["n_test"] == 1000
    assert metrics["provenance"]["manifest_sha256"] and metrics["provenance"]["config_hash"]
    curves = pd.read_csv(run / "seed1/curves.csv")
    assert list(curves.epoch) == list(range(1, metrics["epochs"] + 1))
    assert not (run / "seed1/checkpoint.pt").exists()  # a finished run leaves no resume state
    report = json.loads((workdir / "results/mini/backbones/mini_vit/pretrain.json").read_text())
    assert report["heldout_top1"] > 0 and report["chance_top1"] == pytest.approx(100 / 12)


def test_a_second_backbone_trains_only_what_its_table_shows(workdir):
    """The mini Swin (backbones: {mini_swin: {}}): pre-trained by the workflow, FT and VPT on table7's task."""
    runs = workdir / "results/mini/runs/mini_swin"
    assert sorted(p.relative_to(runs).as_posix() for p in runs.glob("*/*/*")) == [
        "newshapes_src/vtab1k/full",
        "newshapes_src/vtab1k/vpt_deep",
    ]
    metrics = json.loads((runs / "newshapes_src/vtab1k/vpt_deep/seed0/metrics.json").read_text())
    assert metrics["backbone"] == "mini_swin"
    # VPT-deep on the mini Swin: p prompts at widths 48, 48, 96, 96 + a head on the 96-wide pooled feature
    classes = json.loads((workdir / "results/mini/splits/newshapes_src/vtab1k.json").read_text())[
        "num_classes"
    ]
    assert metrics["tuned"] == 2 * (48 + 48 + 96 + 96) + 96 * classes + classes
    table = pd.read_csv(workdir / "results/mini/table7.csv")
    assert set(table.strategy) == {"full", "vpt_deep"}
    assert set(table.backbone) == {"mini_swin"}  # the stamp names whose runs the table shows
    assert provenance.read(workdir / "results/table7.csv")["backbone"] == "mini_swin"
    assert (workdir / "results/mini/backbones/mini_swin/pretrain.json").is_file()


FIGURES = [
    "figure3",
    "figure4",
    "figure5",
    "figure6",
    "figure8",
    "figure9",
    "figure10",
    "figure11",
    "figure12",
    "figure13",
    "figure14",  # data scaling of the natural task (figure15: no specialized task here, a note)
    "figure16",
    "figure17",
    "figure18",
    "figure19",  # example images, also the VPT paper's Figure 10
    "vpt_figure1",  # every method against FT per task
    "vpt_figure10",
    "vpt_figure15",  # the seeds as an ensemble
    "vpt_figure9",  # t-SNE of FT and VPT on one task
    "vpt_figure21",  # ... and on another
    "vpt_figure18",  # cost per strategy and prompt length, measured
    "vpt_figure19",
    "vpt_figure5",  # the config's ablation figure
    "vpt_figure16",  # VPT-deep against each strategy
    "vpt_figure17",  # the sweeps
]


def test_every_figure_and_report_file_is_made(workdir):
    results = workdir / "results"
    for name in FIGURES:
        for path in (results / "mini" / f"{name}.png", results / f"{name}.png"):
            assert path.stat().st_size > 5000, path  # a drawn figure, not an empty canvas
    for name in (
        "figure3",
        "figure4",
        "figure5",
        "figure8",
        "claims",
        "table3",
        "table6",
        "table16",
        "table20",
    ):
        assert (results / "mini" / f"{name}.ipynb").is_file(), name
    # vtab1k: 2 tasks x 5 strategies x 2 seeds, and table1's variant on its one task
    for family, rows in (("vtab1k", 2 * 5 * 2 + 2), ("scaling", None), ("fewshot", 2 * 2 * 2)):
        runs = pd.read_csv(results / "mini/collected/mini_vit" / f"{family}.csv")
        assert rows is None or len(runs) == rows, family
    assert not list(results.glob("mini/*_vs_paper.csv"))  # the miniature has no published counterpart


def test_fid_places_the_shifted_task_above_the_source_like_one(workdir):
    fid = pd.read_csv(workdir / "results/mini/fid.csv", index_col="task")
    assert fid.loc["count_sketch", "fid_mean"] > fid.loc["newshapes_src", "fid_mean"]
    assert fid.features.eq("backbone:mini_vit").all() and (fid.fid_std >= 0).all()
    assert set(fid.winner) <= {"FT", "VPT"}


def test_scaling_fewshot_prompt_length_and_lora_tables(workdir):
    table6 = pd.read_csv(workdir / "results/table6.csv", index_col=["size", "strategy"])
    assert list(table6.index) == [
        (16, "full"),
        (16, "vpt_deep"),
        (64, "full"),
        (64, "vpt_deep"),
    ]  # + vtab1k point
    table3 = pd.read_csv(workdir / "results/table3.csv", index_col=["shots", "selection", "strategy"])
    assert set(table3.index) == {(2, s, t) for s in ("prototype", "random") for t in ("full", "vpt_deep")}
    manifest = json.loads((workdir / "results/mini/splits/newshapes_src/fewshot2_prototype.json").read_text())
    assert manifest["class_counts"]["train"] == [2] * 8 == manifest["class_counts"]["val"]
    table16 = pd.read_csv(workdir / "results/table16.csv", index_col="strategy")
    assert table16.loc["vpt_deep", "newshapes_src"] == 2  # the only prompt length of the test grid
    table20 = pd.read_csv(workdir / "results/table20.csv", index_col=["size", "strategy"])
    assert {(16, "lora"), (64, "lora"), (16, "full")} <= set(table20.index)


def test_attribution_index_and_claims_report(workdir):
    index = pd.read_csv(workdir / "results/mini/attribution/index.csv")
    assert set(index.figure) <= {"figure8", "figure17", "figure18"}
    assert (index.pred_full != index.pred_vpt_deep).all()  # one of the two is wrong, the other right
    claims = pd.read_csv(workdir / "results/claims.csv")
    assert {"C1", "C2", "C3", "C4", "C5"} <= set(claims.claim)
    known = (
        "supported",
        "direction holds (not significant)",
        "direction does not hold (not significant)",
        "direction does not hold (the mean",
        "contradicted",
        "untested (",
        "no data (",
    )
    assert all(status.startswith(known) for status in claims.status), set(claims.status)
    assert claims.seeds.max() == 2 and claims.test.notna().any()  # the reduced config's two seeds
    assert "# Claims of the study" in (workdir / "results/claims.md").read_text()


def test_html_report_gathers_the_outputs(workdir):
    proc = snakemake(
        "-c1",
        "-d",
        str(workdir),
        f"--configfile={ROOT}/.test/config/config.yaml",
        "--report",
        str(workdir / "report.html"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "report.html").stat().st_size > 100_000


def test_rerun_has_nothing_to_do(workdir):
    proc = snakemake("-n", "-c1", "-d", str(workdir), f"--configfile={ROOT}/.test/config/config.yaml")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_dry_runs_of_both_shipped_configs():
    for configfiles, target in (
        (["config/config.yaml"], "all"),
        (["config/config.yaml", "config/mini-full.yaml"], "all"),
        (["config/mini-all.yaml"], "all"),
        (["config/paper.yaml"], "results/table2.csv"),
    ):
        paths = [f"{ROOT}/{path}" for path in configfiles]
        proc = snakemake("-n", "-c1", "-d", f"{ROOT}", target, "--configfile", *paths, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "clevr_count" in out and "cifar100" not in out  # table2 = the structured tasks only
    for strategy in ("full", "vpt_deep", "mixed", "ft_then_pt"):  # the study's four rows
        assert f"strategy={strategy}" in out, strategy
    assert "rule stage1:" in out  # FT-then-PT's sweep backbone


def _dry_run_jobs(target, workdir=ROOT, overlays=(), base=f"{ROOT}/config/paper.yaml"):
    """(rule, wildcards) of every job a dry run of `target` lists (the paper config, or `base`, with overlays)."""
    configs = [base, *map(str, overlays)]
    proc = snakemake("-n", "-c1", "-d", f"{workdir}", target, "--configfile", *configs, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("wildcards:") and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))))
    return jobs


def test_the_defaults_scale_fraction_and_self_supervised_outputs_list_their_own_runs(tmp_path):
    """The VPT paper's Figure 4 on the mini ViT at half width and at its own (FT, linear, VPT-deep, one task a
    quadrant), its Figures 3 / 20 on 20 / 40 / 80 % of the fine-grained train parts, mini Table 12 (MAE's) at three
    train sizes and the VPT paper's Table 4 on both self-supervised mini ViTs: their dry runs list exactly those
    final runs and pre-train the backbones they need."""

    def jobs(target):
        return _dry_run_jobs(target, tmp_path, base=f"{ROOT}/config/config.yaml")

    def final_runs(found):
        return {
            (w["backbone"], w["task"], w["regime"], w["strategy"])
            for rule, w in found
            if rule.startswith("train") and "chunk" not in w
        }

    figure4 = jobs("results/vpt_figure4.png")
    assert {w["backbone"] for rule, w in figure4 if rule == "pretrain"} == {"mini_vit_s", "mini_vit"}
    quadrants = ("newshapes_src", "newshapes_sketch", "count_src", "count_sketch")
    assert final_runs(figure4) == {
        (b, t, "vtab1k", s)
        for b in ("mini_vit_s", "mini_vit")
        for t in quadrants
        for s in ("full", "linear", "vpt_deep")
    }
    figure3 = jobs("results/vpt_figure3.png")
    assert {(b, t, r, s) for b, t, r, s in final_runs(figure3) if r != "fgvc"} == {
        ("mini_vit", t, f"fraction{p}", s)
        for t in ("finestars_src", "finestars_sketch")
        for p in (20, 40, 80)
        for s in ("full", "vpt_deep", "linear")
    }

    tables_mae = jobs("results/table12.csv")
    assert {w["backbone"] for rule, w in tables_mae if rule == "pretrain"} == {"mini_vit_mae"}
    assert final_runs(tables_mae) == {
        ("mini_vit_mae", t, r, s)
        for t in ("count_src", "count_sketch")
        for r in ("scale40", "vtab1k", "scale800")
        for s in ("full", "vpt_deep")
    }
    table4 = jobs("results/vpt_table4.csv")
    assert final_runs(table4) == {
        (b, t, "vtab1k", s)
        for b in ("mini_vit_mae", "mini_vit_moco")
        for t in quadrants
        for s in ("full", "linear", "vpt_deep")
    }


def _final_runs(jobs):
    """(task, regime, strategy) of the final-run jobs: all seeds in one job (train) or one job each (train_seed)."""
    runs = {(w["task"], w["regime"], w["strategy"]) for rule, w in jobs if rule == "train"}
    return runs | {tuple(w["run"].split("/")) for rule, w in jobs if rule == "train_seed"}


def test_paper_outputs_list_exactly_the_runs_they_show():
    table20 = _dry_run_jobs("results/table20.csv")  # CIFAR-100, FT vs LoRA at 400 / 800 (vtab1k) / 10000 ...
    trained = _final_runs(table20)
    assert {t for t, _, _ in trained} == {"cifar100"} and {s for _, _, s in trained} == {"full", "lora"}
    assert {r for _, r, _ in trained} == {"vtab1k", "scale400", "scale5000", "scale10000", "scale20000"}
    figure8 = _dry_run_jobs("results/figure8.png")  # attributions: FT and VPT on four tasks, nothing else
    assert {s for _, _, s in _final_runs(figure8)} == {"full", "vpt_deep"}
    assert {w["task"] for rule, w in figure8 if rule == "attribution"} == {
        "caltech101",
        "clevr_count",
        "svhn",
        "smallnorb_azimuth",
    }
    assert {r for _, r, _ in _final_runs(figure8)} == {"vtab1k"}


FGVC = {"cub200", "nabirds", "oxford_flowers", "stanford_dogs", "stanford_cars"}


def test_fgvc_outputs_list_exactly_their_runs(tmp_path):
    """Table 19 (FT vs VPT + FID), the VPT paper's Table 14 and Figures 3 / 20: fgvc / fraction runs of the five
    FGVC tasks only; Table 19 asks for the FID reference folder while the DAG is built."""
    table14 = _dry_run_jobs("results/vpt_table14.csv", tmp_path)
    assert _final_runs(table14) == {(t, "fgvc", s) for t in FGVC for s in ("full", "linear", "vpt_deep")}
    assert {w["regime"] for rule, w in table14 if rule == "splits"} == {"fgvc"}
    figure3 = _dry_run_jobs("results/vpt_figure3.png", tmp_path)
    fractions = {f"fraction{p}" for p in (10, 20, 40, 60, 80)}
    assert _final_runs(figure3) == {
        (t, r, s) for t in FGVC for r in fractions for s in ("vpt_deep", "linear")
    }
    proc = snakemake(
        "-n", "-c1", "-d", str(tmp_path), f"--configfile={ROOT}/config/paper.yaml", "results/table19.csv"
    )
    assert proc.returncode != 0 and "analyses.fid.reference_dir" in proc.stdout + proc.stderr
    reference = tmp_path / "imagenet_sample"
    reference.mkdir()
    for i in range(2):
        (reference / f"{i}.png").write_bytes(b"")
    overlay = tmp_path / "fid.yaml"
    overlay.write_text(f"analyses: {{fid: {{reference_dir: {reference}, n_reference: 2, repeats: 1}}}}\n")
    jobs = _dry_run_jobs("results/table19.csv", tmp_path, [overlay])
    assert {w["task"] for rule, w in jobs if rule == "fid"} == FGVC  # an FID job per FGVC task, none for VTAB
    assert {w["regime"] for rule, w in jobs if rule == "splits"} == {"fgvc"}
    assert _final_runs(jobs) == {(t, "fgvc", s) for t in FGVC for s in ("full", "vpt_deep")}
    table1 = _dry_run_jobs("results/vpt_table1.csv", tmp_path)  # its FGVC column: the fgvc runs
    assert {(t, s) for t, r, s in _final_runs(table1) if r == "fgvc"} == {
        (t, s) for t in FGVC for s in ("full", "linear", "vpt_deep")
    }
    assert not {t for t, r, _ in _final_runs(table1) if r == "vtab1k"} & FGVC


def test_the_vpt_papers_backbone_tables_and_model_scale_figure_list_their_runs(tmp_path):
    """The VPT paper's Table 2 (Swin-B), Table 4 (MAE and MoCo v3 in one table) and Figure 4 (ViT-B / L / H):
    the vtab1k runs of their rows on each of their backbones, nothing else."""
    vtab = {w["task"] for rule, w in _dry_run_jobs("results/table2.csv", tmp_path) if rule == "download"}
    vtab |= {w["task"] for rule, w in _dry_run_jobs("results/table1.csv", tmp_path) if rule == "download"}
    assert len(vtab) == 19
    rows = ("full", "linear", "vpt_deep")

    def trained(jobs):
        return {(w["backbone"], w["task"], w["strategy"]) for rule, w in jobs if rule == "train"}

    table2 = _dry_run_jobs("results/vpt_table2.csv", tmp_path)
    assert trained(table2) == {("swin_b_in21k", t, s) for t in vtab for s in rows}
    (tmp_path / "resources/weights").mkdir(parents=True)
    for name in ("mae_pretrain_vit_base.pth", "mocov3_linear-vit-b-300ep.pth.tar"):
        (tmp_path / "resources/weights" / name).touch()
    table4 = _dry_run_jobs("results/vpt_table4.csv", tmp_path)
    assert trained(table4) == {
        (b, t, s) for b in ("vit_b16_mae", "vit_b16_mocov3") for t in vtab for s in rows
    }
    figure4 = _dry_run_jobs("results/vpt_figure4.png", tmp_path)
    scale = ("vit_b16_in21k", "vit_l16_in21k", "vit_h14_in21k")
    assert trained(figure4) == {(b, t, s) for b in scale for t in vtab for s in rows}


def test_a_table_of_another_backbone_trains_its_runs_on_that_backbone_only(tmp_path):
    """Han et al. Table 10 (MAE, natural tasks): FT and VPT on MAE, nothing on the main backbone; its local
    weights file is asked for by name and source while the DAG is built, and only by the targets that read it."""
    proc = snakemake(
        "-n", "-c1", "-d", str(tmp_path), f"--configfile={ROOT}/config/paper.yaml", "results/table10.csv"
    )
    assert proc.returncode != 0
    assert "resources/weights/mae_pretrain_vit_base.pth: no such file" in proc.stdout + proc.stderr
    assert "https://dl.fbaipublicfiles.com/mae/pretrain/" in proc.stdout + proc.stderr
    assert "table2.csv" in {w.get("name") for _, w in _dry_run_jobs("results/table2.csv", tmp_path)}
    (tmp_path / "resources/weights").mkdir(parents=True)
    (tmp_path / "resources/weights/mae_pretrain_vit_base.pth").touch()
    jobs = _dry_run_jobs("results/table10.csv", tmp_path)
    natural = {"cifar100", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397"}
    trained = {(w["backbone"], w["task"], w["strategy"]) for rule, w in jobs if rule in ("train", "sweep")}
    assert trained == {("vit_b16_mae", t, s) for t in natural for s in ("full", "vpt_deep")}
    assert {w["backbone"] for rule, w in jobs if rule == "collect"} == {"vit_b16_mae"}
    swin = _dry_run_jobs("results/table7.csv", tmp_path)  # Swin-B: timm's weights, no local file needed
    assert {(w["backbone"], w["task"], w["strategy"]) for rule, w in swin if rule == "train"} == {
        ("swin_b_in21k", t, s) for t in natural for s in ("full", "vpt_deep")
    }


def test_lint_is_clean():
    proc = snakemake("--lint", cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_claims_seeds_train_only_the_main_backbones_ft_and_vpt(tmp_path):
    """`analyses.claims.seeds` (0-2 in the default) are for the runs the claims read: FT and VPT on the main
    backbone; on an extra backbone (the contrastive mini ViT of Tables 13-15) they train `train.seeds` (0)."""
    targets = ("results/table13.csv", "results/table1.csv")
    proc = snakemake(
        "-n", "-c1", "-d", str(tmp_path), *targets, f"--configfile={ROOT}/config/config.yaml", cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs, rule = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("output:") and rule:
            outputs.setdefault(rule, []).extend(p.strip() for p in line.split(":", 1)[1].split(","))
    metrics = {rule: {p for p in paths if p.endswith("metrics.json")} for rule, paths in outputs.items()}
    moco = metrics["train_extra_backbones"]
    assert moco and all("/mini_vit_moco/" in p and "/seed0/" in p for p in moco)
    assert {p.split("/")[-3] for p in moco} == {"full", "vpt_deep"}
    main = metrics["train_claims"]
    assert all("/mini_vit/" in p for p in main) and {p.split("/")[-2] for p in main} == {
        "seed0",
        "seed1",
        "seed2",
    }
    assert not any("/mini_vit_moco/" in p for p in metrics.get("train", ()))


def test_the_significance_table_tests_vpt_against_each_strategy(workdir):
    tests = pd.read_csv(workdir / "results" / "vpt_table10.csv")
    assert set(tests.strategy) == {"full", "linear", "mixed", "ft_then_pt"}
    assert set(tests.task) == {"newshapes_src", "count_sketch", "all"}
    per_task = tests[tests.task != "all"]
    assert per_task.p.between(0, 1).all() and (per_task.n == 2).all()  # two seeds each: Welch has a p
    table1 = pd.read_csv(workdir / "results" / "table1.csv", index_col="strategy")
    full = per_task[(per_task.strategy == "full") & (per_task.task == "newshapes_src")].iloc[0]
    expected = table1.loc["vpt_deep", "newshapes_src"] - table1.loc["full", "newshapes_src"]
    assert full["diff"] == pytest.approx(expected, abs=0.02)
    assert (workdir / "results" / "vpt_figure16.png").stat().st_size > 5000


def test_adapt_figure3_asks_for_one_adapt_run(tmp_path):
    """config/mini-all.yaml's `analyses.pruning`: Adapt's Figure 3 needs the Adapt run on its task, no other."""
    proc = snakemake(
        "-n",
        "-c1",
        "-d",
        str(tmp_path),
        "results/adapt_figure3.png",
        f"--configfile={ROOT}/config/mini-all.yaml",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trains = [
        line
        for line in proc.stdout.splitlines()
        if line.strip().startswith("wildcards:") and "strategy=" in line
    ]
    assert {line.split("strategy=")[1].split(",")[0] for line in trains} == {"adapt"}
    assert {line.split("task=")[1].split(",")[0] for line in trains} == {"newshapes_src"}
