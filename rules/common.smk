import dataclasses
import functools
import json
import math
import os
import re
import shlex
import sys
import types
from snakemake.exceptions import WorkflowError

from vptft.config import backbone_weights, missing_weights
from vptft.config import check_local_resources, validate_config
from vptft import provenance
from vptft.backbones import BACKBONES
from vptft.io import image_files
from vptft.selection import grid_size
from vptft import cost, study, worker
from vptft.splits import family_regimes, regime_spec
from vptft import strategies as strategy_registry
from vptft.strategies import get_strategy

# Schema + semantic checks before any job runs; fills in the schema's defaults.
validate_config(config)


# A local run: no GPUs asked for that the machine lacks (the executor is known only once the run starts), and one
# warm process that runs the jobs without their ~5 s of imports each (vptft.worker; not on a cluster).
WORKER = []


onstart:
    if workflow.local_exec:
        check_local_resources(config)
        WORKER.append(worker.start(f"{LOGS}/worker.log"))


onsuccess:
    for process in WORKER:
        worker.stop(process)


onerror:
    for process in WORKER:
        worker.stop(process)


# Jobs call `python -m vptft`: without --sdm conda that must be the Python running Snakemake (e.g.
# .venv/bin/snakemake without an activated venv); a conda env, when used, is activated in front of it.
envvars:
    "PATH",


os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)

BENCH = config["benchmark"]
# The main backbone (every family, figure and the claims), and with it the extra ones (what their tables show).
BB = config["backbone"]
BACKBONE_KEYS = study.backbones(config)
EXTRA_BACKBONES = BACKBONE_KEYS[1:]
# Written into every table, figure and report (benchmark, backbone, config hash): whose results a file holds.
PROVENANCE = provenance.of_config(config)


def stamp_of(name):
    """The stamp of an output (a table, figure or report by its name): a table of another backbone names it."""
    if name == study.CLIP_FIGURE and study.CLIP_TABLE in config["tables"]:
        name = study.CLIP_TABLE  # drawn from that table: its backbone
    if name in study.run_outputs(config):
        return {**PROVENANCE, "backbone": study.table_backbone(config, name)}
    return PROVENANCE


DATA = config["data_dir"]
RESULTS = f"results/{BENCH}"


def runs_dir(backbone):
    return f"{RESULTS}/runs/{backbone}"


RUNS = runs_dir("{backbone}")  # in output patterns: the backbone is a wildcard
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
NOTEBOOKS = os.path.join(
    workflow.basedir, "notebooks"
)  # absolute: the workdir may be elsewhere (-d)


# a strategy, or a variant of one with some options fixed: vpt_deep[location=add]
STRATEGY_NAME = strategy_registry.NAME_PATTERN


wildcard_constraints:
    backbone="|".join(map(re.escape, BACKBONE_KEYS)),
    task="[a-z0-9_]+",
    strategy=STRATEGY_NAME,
    regime="vtab1k|scale[0-9]+|fewshot[0-9]+_(draw[0-9]+|prototype)|fgvc|fraction[0-9]+|coop[0-9]+_draw[0-9]+",
    family="vtab1k|scaling|fewshot|fgvc|fraction|coop",
    seed="[0-9]+",
    chunk="[0-9]+",
    # vpt_table10 (significance) and vpt_table12 (cost) are rendered outputs (rules/outputs.smk), not `tables`
    table=r"(?!vpt_table1[02][._])(vpt_|adapt_)?table[0-9]+",
    figure="figure[0-9]+",


def spec(**values):
    """Config values a job uses, as one JSON argument (a param: a changed value reruns the job)."""
    return json.dumps(values, sort_keys=True)


# Resources of a stage: its own entry over `resources.default` over these.
BUILTIN_RESOURCES = {"gpu": 0, "mem_mb": 2000, "runtime": 30, "threads": 1}


def stage_resources(stage):
    return {
        **BUILTIN_RESOURCES,
        **config["resources"]["default"],
        **config["resources"].get(stage, {}),
    }


def exclusive_threads(stage):
    """The threads of a job that times itself: every core of a local run, so that no other job shares the
    machine while it measures; on a cluster (its own allocation) or without --cores, the stage's threads.
    """
    if workflow.local_exec:
        try:
            return workflow.cores
        except WorkflowError:  # no --cores (a dry run)
            pass
    return stage_resources(stage)["threads"]


# Job sizes and runtimes from the cost estimate (vptft.cost; without step times: the configured runtime).
# A planner per backbone, on the config as its jobs see it (its schedule: PLANNERS[b].config).
PLANNERS = cost.backbone_planners(config, stage_resources("train")["runtime"])


def requested_runtime(run, stage, seeds=None, chunk=0):
    """Minutes a training job asks for: its estimate x cost.safety + cost.overhead_minutes."""
    planner = PLANNERS[run.backbone]
    if planner.times is None:
        return planner.limit
    if stage == "train":
        n_seeds = (
            len(study.final_seeds(config, run.strategy, run.backbone))
            if seeds is None
            else seeds
        )
        curves = study.draws_curves(config, run.task, run.regime, run.strategy)
        estimate = planner.final(run.task, run.regime, run.strategy, n_seeds, curves)
    else:  # a sweep chunk; stage 1 retrains one point of the grid, at most a chunk's time
        estimate = planner.sweep(run.task, run.regime, run.strategy, int(chunk))
    return planner.runtime(
        estimate, f"the {stage} job of {run.task}/{run.regime}/{run.strategy}"
    )


def planned_final_runs(backbone=BB):
    """(task, regime, strategy) of every final run the config's outputs need on a backbone."""
    runs = set()
    for family in study.configured_families(config):
        for regime in family_regimes(family, config["regimes"]):
            for task, strategies in study.family_runs(config, family, backbone).items():
                runs.update((task, regime, strategy) for strategy in strategies)
    return sorted(runs)


def one_job_per_seed():
    """Final runs whose seeds together would not fit the runtime limit on some backbone: each seed gets its own
    job (on every backbone: the `run` wildcard does not name the backbone; more jobs, the same files).
    """
    split = set()
    for backbone in BACKBONE_KEYS:
        planner = PLANNERS[backbone]
        if planner.times is None:
            continue
        split.update(
            f"{task}/{regime}/{strategy}"
            for task, regime, strategy in planned_final_runs(backbone)
            if not planner.fits(
                planner.final(
                    task,
                    regime,
                    strategy,
                    len(study.final_seeds(config, strategy, backbone)),
                    study.draws_curves(config, task, regime, strategy),
                )
            )
        )
    return sorted(split)


SPLIT_RUNS = one_job_per_seed()


def run_of(wildcards):
    """backbone, task, regime, strategy of a per-seed final job (its `run` wildcard: task/regime/strategy)."""
    task, regime, strategy = wildcards.run.split("/")
    return types.SimpleNamespace(
        backbone=wildcards.backbone, task=task, regime=regime, strategy=strategy
    )


def backbone_checkpoint(wildcards=None):
    """The weights file of a job's backbone (its `backbone` wildcard, else the main one): the pretrain rule's
    output, a configured local file, or none (timm's source)."""
    key = (wildcards.get("backbone") if wildcards is not None else None) or BB
    if BACKBONES[key].pretrained_by_workflow:
        return f"{RESULTS}/backbones/{key}/model.safetensors"
    if problem := missing_weights(config, key):
        raise ValueError(problem)
    return backbone_weights(config, key)[1] or []


def backbone_arg(input):
    return f"--backbone {shlex.quote(input.backbone)}" if input.get("backbone") else ""


# Keys of `train` that change what a sweep or a final run computes (seeds and curve points only matter to the
# final runs): a job's spec holds only what it uses, so editing the seed list does not re-run the sweeps.
SWEEP_TRAIN_KEYS = (
    "batch_size",
    "epochs",
    "min_steps",
    "warmup_fraction",
    "lr_scale_batch",
    "normalization",
    "head_init",
    "device",
    "optimizer_behavior",
    "precision",
    "compile",
    "backbone_dropout",
)
STRATEGY_ENTRY_KEYS = ("grid", "options", "batch_size", "batch_size_long_prompts")


def run_spec(wildcards, stage):
    view = PLANNERS[wildcards.backbone].config
    regime_train = study.regime_train(view, wildcards.regime)
    train = {k: regime_train[k] for k in SWEEP_TRAIN_KEYS}
    entry = view["strategies"][wildcards.strategy]
    entry = {key: entry[key] for key in STRATEGY_ENTRY_KEYS if key in entry}
    if (
        stage == "train"
    ):  # a run no figure draws the curve of evaluates the test set after its last epoch only
        curves = study.draws_curves(
            config, wildcards.task, wildcards.regime, wildcards.strategy
        )
        train["curve_points"] = config["train"]["curve_points"] if curves else 1
    else:  # sweep, or stage1 (which retrains one sweep point: the chunking does not change it)
        train["sweep_seed"] = config["train"]["sweep_seed"]
    if stage == "sweep":
        train["sweep_chunk_size"] = PLANNERS[wildcards.backbone].chunk_size(
            wildcards.task, wildcards.regime, wildcards.strategy
        )
    return spec(
        task=wildcards.task,
        regime=wildcards.regime,
        strategy=wildcards.strategy,
        backbone=wildcards.backbone,
        data_dir=DATA,
        train=train,
        **entry,
    )


def n_chunks(wildcards):
    return PLANNERS[wildcards.backbone].n_chunks(
        wildcards.task, wildcards.regime, wildcards.strategy
    )


def continued_runs(wildcards, stage, seeds=None):
    """The weights a continuing strategy (FT-then-PT) starts from: the continued strategy's stage-1 backbone for
    the sweep, its final run of the same seed for each final run; nothing for other strategies.
    """
    base = get_strategy(wildcards.strategy).continues
    if not base:
        return []
    runs = f"{runs_dir(wildcards.backbone)}/{wildcards.task}/{wildcards.regime}/{base}"
    if stage == "sweep":
        return [f"{runs}/stage1.safetensors"]
    return expand(
        f"{runs}/seed{{seed}}/tuned.safetensors",
        seed=(
            study.final_seeds(config, wildcards.strategy, wildcards.backbone)
            if seeds is None
            else seeds
        ),
    )


def start_from_arg(input):
    files = input.get("start_from") or []
    return "--start-from " + " ".join(map(shlex.quote, files)) if files else ""


# Seeds of the final runs: train.seeds, and analyses.claims.seeds for the runs the claims read (FT and VPT on the
# main backbone)
TRAIN_SEEDS = list(config["train"]["seeds"])
CLAIM_SEEDS = study.final_seeds(config, study.CLAIM_STRATEGIES[0])
# the strategies the `train` rule serves (the others, if any, are train_claims')
# (a variant of FT or VPT, e.g. vpt_deep[location=add], is no run the claims read: `train` serves it)
TRAIN_SEEDS_STRATEGIES = (
    STRATEGY_NAME
    if CLAIM_SEEDS == TRAIN_SEEDS
    else "(?!(?:"
    + "|".join(study.CLAIM_STRATEGIES)
    + r")(?![a-z0-9_\[]))"
    + STRATEGY_NAME
)


def seed_files(name, seeds):
    """Per-seed output pattern of a train rule: one job trains every seed of its list."""
    return expand(
        f"{RESULTS}/runs/{{{{backbone}}}}/{{{{task}}}}/{{{{regime}}}}/{{{{strategy}}}}/seed{{seed}}/{name}",
        seed=seeds,
    )


def selected_sweep(wildcards):
    """The sweep whose selected point a final run trains: its own regime's, or vtab1k's (config `hparams`)."""
    source = study.hparams_source(config, wildcards.regime)
    return f"{runs_dir(wildcards.backbone)}/{wildcards.task}/{source}/{wildcards.strategy}/sweep.csv"


def collected(family, tasks, strategies=None, backbone=BB):
    """The runs tables of tasks x strategies of a regime family on a backbone (one per task and strategy, so an
    output reads exactly the runs it shows); strategies=None: those the family trains on each task.
    """
    runs = study.family_runs(config, family, backbone)
    return [
        f"{RESULTS}/collected/{backbone}/{family}/{task}/{strategy}.csv"
        for task in tasks
        for strategy in (runs.get(task, []) if strategies is None else strategies)
    ]


def family_metrics(wildcards):
    """Every final run of one task and strategy in a regime family: its regimes x seeds."""
    return expand(
        f"{runs_dir(wildcards.backbone)}/{wildcards.task}/{{regime}}/{wildcards.strategy}/seed{{seed}}/metrics.json",
        regime=study.family_regime_names(config, wildcards.family),
        seed=study.final_seeds(config, wildcards.strategy, wildcards.backbone),
    )


def buildable(output, inputs):
    """`inputs` of an output (a table, figure or report name), or a refusal that names what the config lacks and
    how to add it: raised while the DAG is built, so no job runs toward an output that would fail.
    """

    def inputs_of(wildcards=None):
        name = output if isinstance(output, str) else output(wildcards)
        if problem := study.output_problem(config, name.split(".")[0]):
            raise ValueError(f"{RESULTS}/{name}: {problem}")
        return inputs(wildcards) if callable(inputs) else inputs

    return inputs_of


def output_runs(name):
    """The runs tables an output shows (a table, or the model-scale figure): per backbone and regime family."""
    return [
        path
        for backbone in study.table_backbones(config, name)
        for family, tasks in study.table_task_families(config, name).items()
        for path in collected(
            family, tasks, study.table_strategies(config, name, family), backbone
        )
    ]


def table_runs(wildcards):
    return output_runs(wildcards.table)


def table_fid(wildcards):
    """The FID files of a table's tasks where it shows them (Table 19), else none."""
    if not config["tables"][wildcards.table]["fid"]:
        return []
    tasks = study.table_tasks(config, wildcards.table)
    return expand(f"{RESULTS}/fid/{{task}}.json", task=tasks)


def home_manifest(wildcards):
    """The split a task's FID reads: its vtab1k one, or (fine-grained tasks) its fgvc one."""
    regime = "fgvc" if study.in_family(wildcards.task, "fgvc") else "vtab1k"
    return f"{RESULTS}/splits/{wildcards.task}/{regime}.json"


def table_spec(wildcards, input, output):
    entry = config["tables"][wildcards.table]
    return spec(
        table=wildcards.table,
        benchmark=BENCH,
        backbone=study.table_backbone(config, wildcards.table),
        backbones=study.table_backbones(config, wildcards.table),
        family=entry["regime"],
        groups=entry["groups"],
        metric=entry["metric"],
        layout=entry["layout"],
        fid=list(input.fid),
        tasks=study.table_tasks(config, wildcards.table),
        strategies=study.table_strategies(config, wildcards.table),
        runs=list(input.runs),
        out_csv=output.csv,
        vs_paper=output.get("vs_paper"),
        provenance=stamp_of(wildcards.table),
    )


# The unqualified names (results/table2.csv, ...) that the paper_name rule copies from results/{bench}/.
PAPER_NAMES = "(vpt_|adapt_)?table[0-9]+[.]csv|claims[.](md|csv)|(vpt_|adapt_)?figure[0-9]+[.]png|fid[.]csv"


def foreign_copy_note(wildcards):
    """The paper_name rule's note on results/<name>: rewritten, newer than it, while results/<name> is not a copy
    of this config's file (another benchmark's or config's, e.g. copied from another machine), so the copy is
    re-made whatever the rerun triggers; unchanged once it is a copy. Written while the DAG is built (a dry run
    too): it records what was found; results/<name> is left to the job (only an mtime ahead of the clock is set
    back).
    """
    alias = f"results/{wildcards.name}"
    note = f"{RESULTS}/.paper_names/{wildcards.name}.json"
    stamp = stamp_of(wildcards.name.split(".")[0])
    found = provenance.note_foreign_copy(
        alias, f"{RESULTS}/{wildcards.name}", note, stamp
    )
    if found:
        print(
            f"{alias} holds {provenance.describe(found['found'])}, not this config's "
            f"({provenance.describe(stamp)}): it is copied again",
            file=sys.stderr,
        )
    return note


@functools.cache
def count_images(folder):
    return len(image_files(folder))


def fid_reference(wildcards=None):
    """The folder of pre-training images FID compares with (the mini benchmark renders its own)."""
    reference = config["analyses"]["fid"]["reference_dir"]
    if BENCH == "mini":
        return []
    if not reference:
        raise ValueError(
            "$.analyses.fid.reference_dir: the FID jobs (Figure 3, the claims report) need a folder of "
            "pre-training images, e.g. a sample of ImageNet-21k; set it, or build targets that need no FID"
        )
    fid = config["analyses"]["fid"]
    need, found = fid["n_reference"] * fid["repeats"], count_images(reference)
    if (
        found < need
    ):  # checked while the DAG is built, not by the FID job after hours of other jobs
        raise ValueError(
            f"$.analyses.fid.reference_dir: {reference} holds {found} image files (png/jpg/jpeg); FID draws "
            f"{need} = n_reference ({fid['n_reference']}) x repeats ({fid['repeats']}) of them"
        )
    return reference


def fid_strategies():
    """Figure 3 compares FT and VPT, with the linear probe beside them where it ran."""
    trained = study.family_strategies(config, "vtab1k")
    return [s for s in ("full", "vpt_deep", "linear") if s in trained]


def curve_strategies():
    return study.curve_strategies(config)


def curve_tasks():
    return study.analysis_tasks(config, "curves") or study.vtab_tasks(config)


def attribution_tasks():
    entry = config["analyses"]["attribution"]
    return list(dict.fromkeys(entry["tasks"] + entry["quadrant_tasks"]))


# Han et al.'s loss curves: Figure 5 (two tasks per group) and in log scale (9), every task of a group in log
# scale (10 natural, 11 specialized, 12 structured)
CURVE_FIGURES = ["figure5", "figure9", "figure10", "figure11", "figure12"]
# data scaling: Figure 4 (per group), the overfitting tasks' losses (6) and every scaling task's (13), accuracy
# vs train size per task of a group (14 natural, 15 specialized, 16 structured)
SCALING_FIGURES = ["figure4", "figure6", "figure13", "figure14", "figure15", "figure16"]
ATTRIBUTION_FIGURES = ["figure8", "figure17", "figure18"]


def report_targets():
    """Every table, figure and report the config defines (what `rule all` builds)."""
    tables = list(config["tables"])
    targets = expand(f"{RESULTS}/{{table}}.csv", table=tables)
    targets += expand(f"{RESULTS}/{{table}}.ipynb", table=tables)
    targets += expand("results/{table}.csv", table=tables)
    families = study.backbone_families(config, BB)
    targets += [f"{RESULTS}/collected/{BB}/{family}.csv" for family in families]
    for rendered in RENDERED:  # rules/report.smk
        if rendered.when():
            for name in rendered.files.values():
                targets.append(f"{RESULTS}/{name}")
                if re.fullmatch(PAPER_NAMES, name):
                    targets.append(f"results/{name}")
    return targets


def all_targets():
    targets = report_targets()
    if "pretrain" in config:
        targets.append(f"{RESULTS}/backbones/{BB}/pretrain.json")
    return targets
