"""The cost estimate: its arithmetic, the step times it reads, the job sizes and runtimes it gives the Snakefile,
and `vptft cost` over a real dry run."""

import math
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from vptft import cost, cost_report
from vptft.config import validate_config

PAPER = f"{ROOT}/config/paper.yaml"
TEST_CONFIG = f"{ROOT}/.test/config/config.yaml"


def paper_config(**train):
    config = yaml.safe_load(Path(PAPER).read_text())
    config["train"].update(train)
    return validate_config(config)


def step_times_csv(path, backbone="mini_vit", full=2.0, evals=0.5):
    rows = [
        "backbone,strategy,prompt_length,batch_size,device,ms_per_image_train,ms_per_image_eval",
        f"{backbone},full,0,64,cpu,{full},{evals}",
        f"{backbone},linear,0,64,cpu,0.01,{evals}",
        f"{backbone},vpt_deep,1,64,cpu,1.0,{evals}",
        f"{backbone},vpt_deep,200,64,cpu,3.0,{2 * evals}",
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_paper_figures_are_read_per_batch_of_64():
    times = cost.paper_step_times("vit_b16_in21k")
    assert times.ms("train", "full") == pytest.approx(358.7 / 64)
    assert times.ms("eval", "vpt_deep", 200) == pytest.approx(140.8 / 64)
    assert times.ms("train", "vpt_deep", 100) == pytest.approx((213.6 + (360.1 - 213.6) * 99 / 199) / 64)
    assert "batch of 64" in times.source
    assert cost.paper_step_times("mini_vit") is None  # no published figures for the mini ViT


def test_measured_step_times_come_before_the_paper_and_fill_gaps(tmp_path):
    times = cost.read_step_times(step_times_csv(tmp_path / "s.csv"), "mini_vit")
    assert times.ms("train", "vpt_deep", 200) == 3.0 and times.ms("train", "lora") == 2.0  # lora: full's
    assert times.ms("train", "mixed", 10) == pytest.approx(2.0 * (1 + 10 + 16) / 17)  # full x token ratio
    assert times.ms("train", "ft_then_pt", 1) == 1.0  # a prompt method: VPT-deep's
    config = paper_config()
    config["backbone"] = "mini_vit"
    assert cost.step_times(config, tmp_path / "s.csv").source.startswith("measured by vptft bench")
    assert cost.read_step_times(tmp_path / "s.csv", "vit_b16_in21k") is None


def test_a_final_run_costs_its_epochs_and_evaluations(tmp_path):
    config = validate_config(yaml.safe_load(Path(ROOT, "config", "config.yaml").read_text()))
    times = cost.read_step_times(step_times_csv(tmp_path / "s.csv"), "mini_vit")
    # 160 + 40 trainval images at batch 64: 4 steps per epoch, raised to min_steps (100: 25 epochs)
    estimate = cost.final_estimate(config, times, "source", "vtab1k", "full", seeds=3, curves=True)
    epochs = math.ceil(config["train"]["min_steps"] / 4)
    assert epochs > config["train"]["epochs"]  # the floor is what sets the epochs here
    evals = config["train"]["curve_points"] * 1000  # the mini tasks' 1,000 test images
    assert estimate.steps == 3 * epochs * 4 and estimate.images == 3 * (epochs * 200 + evals)
    assert estimate.seconds == pytest.approx(3 * (epochs * 200 * 2.0 + evals * 0.5) / 1000)
    assert estimate.eval_seconds == pytest.approx(3 * evals * 0.5 / 1000)
    once = cost.final_estimate(config, times, "source", "vtab1k", "full", seeds=3, curves=False)
    assert once.eval_seconds == pytest.approx(3 * 1000 * 0.5 / 1000)  # no figure: the last epoch only


def test_the_fraction_family_trains_every_fraction_its_own_epochs(tmp_path):
    """The default's fraction runs: 40 epochs at every fraction (min_steps 0), so a larger fraction takes more
    steps; under train.min_steps the smallest fraction would get the most epochs (the figure would show that)."""
    config = validate_config(yaml.safe_load(Path(ROOT, "config", "config.yaml").read_text()))
    times = cost.read_step_times(step_times_csv(tmp_path / "s.csv"), "mini_vit")
    fraction, train = config["regimes"]["fraction"], config["train"]
    assert fraction["epochs"] == 40 and fraction["min_steps"] == 0 and train["min_steps"] == 100
    steps = {
        pct: cost.final_estimate(config, times, "finestars_src", f"fraction{pct}", "full", 1, False).steps
        for pct in fraction["percent"]
    }
    parts = {pct: math.ceil(900 * pct / 100) for pct in fraction["percent"]}  # of the 900-image train part
    assert steps == {pct: 40 * math.ceil(n / 64) for pct, n in parts.items()}
    assert steps[20] < steps[40] < steps[80]
    fgvc = cost.final_estimate(config, times, "finestars_src", "fgvc", "full", 1, False).steps
    assert fgvc == max(train["epochs"], math.ceil(100 / 15)) * 15  # the fgvc family keeps train's schedule
    del config["regimes"]["fraction"]["epochs"], config["regimes"]["fraction"]["min_steps"]
    floor = cost.final_estimate(config, times, "finestars_src", "fraction20", "full", 1, False).steps
    assert floor == math.ceil(100 / 3) * 3  # train.min_steps: 34 epochs of 3 steps


def test_a_backbone_pretrains_with_its_own_epochs_where_it_has_them(tmp_path):
    """The default's masked-autoencoding mini ViT pre-trains 30 epochs (`backbones.mini_vit_mae.pretrain`), the
    others the shared `pretrain.epochs`: the job's spec and the cost model both read the backbone's values."""
    from vptft import study

    config = validate_config(yaml.safe_load(Path(ROOT, "config", "config.yaml").read_text()))
    shared = config["pretrain"]["epochs"]
    assert shared != 30 and study.pretrain_config(config, "mini_vit") == config["pretrain"]
    assert study.pretrain_config(config, "mini_vit_mae") == {**config["pretrain"], "epochs": 30}
    times = cost.read_step_times(step_times_csv(tmp_path / "s.csv"), "mini_vit")
    steps = {bb: cost.pretrain_estimate(config, times, bb).steps for bb in ("mini_vit", "mini_vit_mae")}
    per_epoch = math.ceil(config["pretrain"]["n_train"] / config["pretrain"]["batch_size"])
    assert steps == {"mini_vit": shared * per_epoch, "mini_vit_mae": 30 * per_epoch}


def test_auto_chunks_are_the_largest_that_fit_the_limit():
    config = paper_config(sweep_chunk_size="auto")
    planner = cost.Planner(config, cost.paper_step_times("vit_b16_in21k"), limit=720)
    for task, regime in (("cifar100", "vtab1k"), ("dsprites_location", "scale20000")):
        size = planner.chunk_size(task, regime, "vpt_deep")
        assert 1 <= size < len(planner.points("vpt_deep"))
        chunks = [
            planner.sweep(task, regime, "vpt_deep", c)
            for c in range(planner.n_chunks(task, regime, "vpt_deep"))
        ]
        assert all(planner.fits(chunk) for chunk in chunks)
        bigger = cost.Planner(config, planner.times, limit=720)
        bigger.config = {**config, "train": {**config["train"], "sweep_chunk_size": size + 1}}
        assert not all(
            bigger.fits(bigger.sweep(task, regime, "vpt_deep", c))
            for c in range(bigger.n_chunks(task, regime, "vpt_deep"))
        )


def test_a_job_over_the_limit_is_refused_naming_it():
    planner = cost.Planner(paper_config(curve_points=None), cost.paper_step_times("vit_b16_in21k"), limit=720)
    five = planner.final("dsprites_location", "vtab1k", "vpt_deep", 5, True)
    one = planner.final("dsprites_location", "vtab1k", "vpt_deep", 1, True)
    assert not planner.fits(five) and planner.fits(one)  # the seeds of this run need a job each
    assert planner.runtime(one, "x") <= 720
    with pytest.raises(
        ValueError, match=r"the train job of dsprites.* over the configured maximum runtime of 720"
    ):
        planner.runtime(five, "the train job of dsprites_location/vtab1k/vpt_deep")


def test_a_scaling_size_a_task_cannot_fill_is_priced_as_the_splits_cap_it():
    config = paper_config()
    assert cost.regime_sizes(config, "cifar100", "scale20000") == (20000, 5000)  # 50,000 records: enough
    # caltech101 has 3,060 non-test records: every size from 5,000 up gets all of them at 4:1, alike
    assert {cost.regime_sizes(config, "caltech101", f"scale{n}") for n in (5000, 10000, 20000)} == {
        (2448, 612)
    }
    # the same sizes as the kitti manifest of tests/test_vtab.py
    assert cost.regime_sizes(config, "kitti_distance", "scale10000") == (5416, 1354)


def test_every_evaluation_epoch_costs_more_than_training_on_dsprites():
    """Why train.curve_points is a choice: the test set of 73,728 images after each of 100 epochs."""
    times = cost.paper_step_times("vit_b16_in21k")
    every = cost.final_estimate(
        paper_config(curve_points=None), times, "dsprites_location", "vtab1k", "full", 1, True
    )
    assert every.eval_seconds > every.seconds - every.eval_seconds


@pytest.mark.workflow
def test_paper_jobs_request_at_most_the_limit_and_split_seeds_where_needed(tmp_path):
    every_epoch = (
        tmp_path / "every_epoch.yaml"
    )  # test curves after every epoch: dSprites' VPT seeds must split
    every_epoch.write_text("train: {curve_points: null}\n")
    jobs = cost_report.dry_run_jobs(
        f"{ROOT}/Snakefile", [PAPER, str(every_epoch)], ["results/table2.csv"], every_job=True
    )
    assert max(int(job["resources"]["runtime"]) for job in jobs if "runtime" in job["resources"]) <= 720
    planner = cost.Planner(paper_config(curve_points=None), cost.paper_step_times("vit_b16_in21k"), limit=720)
    split = {job["wildcards"]["run"] for job in jobs if job["rule"] == "train_seed"}
    together = {
        "/".join(job["wildcards"][k] for k in ("task", "regime", "strategy"))
        for job in jobs
        if job["rule"] == "train"
    }
    assert "dsprites_location/vtab1k/vpt_deep" in split and not split & together
    for run in split | together:
        fits = planner.fits(planner.final(*run.split("/"), 5, True))
        assert fits == (run in together), run


@pytest.mark.workflow
def test_cost_prices_every_job_of_the_dry_run(tmp_path):
    rows, table = cost_report.run(
        [TEST_CONFIG],
        [],
        step_times_csv(tmp_path / "s.csv"),
        every_job=True,
        cores=2,
        job_seconds=7.0,
        light_job_seconds=0.5,
    )
    by_rule = {row["rule"]: row for row in rows}
    # a job that loads a model pays the model start-up, a collect / select / table job the light one
    assert by_rule["select"]["seconds"] == pytest.approx(0.5 * by_rule["select"]["jobs"])
    assert by_rule["fid"]["seconds"] == pytest.approx(7.0 * by_rule["fid"]["jobs"])
    assert by_rule["sweep"]["seconds"] > 7.0 * by_rule["sweep"]["jobs"]
    assert (
        by_rule["train"]["steps"] > 0 and by_rule["sweep"]["images"] > 0 and by_rule["pretrain"]["steps"] > 0
    )
    assert by_rule["select"]["steps"] == 0
    assert "measured by vptft bench" in table and "GPU-hours" in table
    assert sum(row["jobs"] for row in rows) == len(
        cost_report.dry_run_jobs(f"{ROOT}/Snakefile", [TEST_CONFIG], [], every_job=True)
    )
