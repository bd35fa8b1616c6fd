import json
import math
import os
import shlex
import sys

from vptft.config import check_local_resources, validate_config
from vptft.selection import grid_size
from vptft.splits import regime_spec
from vptft.strategies import get_strategy
from vptft.tasks import get_task

# Schema + semantic checks before any job runs; fills in the schema's defaults.
validate_config(config)


onstart:
    # A local run must not ask for GPUs the machine lacks (the executor is known only once the run starts).
    if workflow.local_exec:
        check_local_resources(config)


# Jobs call `python -m vptft`: without --sdm conda that must be the Python running Snakemake (e.g.
# .venv/bin/snakemake without an activated venv); a conda env, when used, is activated in front of it.
envvars:
    "PATH",


os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)

BENCH = config["benchmark"]
BB = config["backbone"]
DATA = config["data_dir"]
RESULTS = f"results/{BENCH}"
RUNS = f"{RESULTS}/runs/{BB}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
NOTEBOOKS = os.path.join(
    workflow.basedir, "notebooks"
)  # absolute: the workdir may be elsewhere (-d)


wildcard_constraints:
    task="[a-z0-9_]+",
    strategy="[a-z0-9_]+",
    regime="vtab1k|oneshot|scale[0-9]+",
    seed="[0-9]+",
    chunk="[0-9]+",
    table="(vpt_)?table[0-9]+",


def spec(**values):
    """Config values a job uses, as one JSON argument (a param: a changed value reruns the job)."""
    return json.dumps(values, sort_keys=True)


def stage_resources(stage):
    return {**config["resources"]["default"], **config["resources"].get(stage, {})}


def backbone_checkpoint(wildcards=None):
    """The backbone weights file: the pretrain rule's output, a configured local file, or none (timm)."""
    if "pretrain" in config:
        return f"{RESULTS}/backbones/{BB}/model.safetensors"
    return config["backbone_checkpoint"] or []


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
    "backbone_dropout",
)
STRATEGY_ENTRY_KEYS = ("grid", "options", "batch_size", "batch_size_long_prompts")


def run_spec(wildcards, stage):
    entry = config["strategies"][wildcards.strategy]
    train = {k: config["train"][k] for k in SWEEP_TRAIN_KEYS}
    if stage == "train":
        train["curve_points"] = config["train"]["curve_points"]
    else:  # sweep, or stage1 (which retrains one sweep point: the chunking does not change it)
        train["sweep_seed"] = config["train"]["sweep_seed"]
    if stage == "sweep":
        train["sweep_chunk_size"] = config["train"]["sweep_chunk_size"]
    return spec(
        task=wildcards.task,
        regime=wildcards.regime,
        strategy=wildcards.strategy,
        backbone=BB,
        data_dir=DATA,
        train=train,
        **{key: entry[key] for key in STRATEGY_ENTRY_KEYS if key in entry},
    )


def n_chunks(strategy):
    size = config["train"]["sweep_chunk_size"]
    points = grid_size(config["strategies"][strategy]["grid"])
    return math.ceil(points / size) if size else 1


def continued_runs(wildcards, stage):
    """The weights a continuing strategy (FT-then-PT) starts from: the continued strategy's stage-1 backbone for
    the sweep, its final run of the same seed for each final run; nothing for other strategies.
    """
    base = get_strategy(wildcards.strategy).continues
    if not base:
        return []
    runs = f"{RUNS}/{wildcards.task}/{wildcards.regime}/{base}"
    if stage == "sweep":
        return [f"{runs}/stage1.safetensors"]
    return expand(
        f"{runs}/seed{{seed}}/tuned.safetensors", seed=config["train"]["seeds"]
    )


def start_from_arg(input):
    files = input.get("start_from") or []
    return "--start-from " + " ".join(map(shlex.quote, files)) if files else ""


def table_tasks(table):
    groups = config["tables"][table]["groups"]
    return [t for t in config["tasks"] if get_task(t).group in groups]


def seed_files(name):
    """Per-seed output pattern of the train rule: one job trains every configured seed."""
    return expand(
        f"{RUNS}/{{{{task}}}}/{{{{regime}}}}/{{{{strategy}}}}/seed{{seed}}/{name}",
        seed=config["train"]["seeds"],
    )


def table_metrics(wildcards):
    regime = config["tables"][wildcards.table]["regime"]
    return expand(
        f"{RUNS}/{{task}}/{regime}/{{strategy}}/seed{{seed}}/metrics.json",
        task=table_tasks(wildcards.table),
        strategy=list(config["strategies"]),
        seed=config["train"]["seeds"],
    )


def all_targets():
    targets = expand("results/{table}.csv", table=list(config["tables"]))
    targets += expand(f"{RESULTS}/{{table}}.ipynb", table=list(config["tables"]))
    if "pretrain" in config:
        targets.append(f"{RESULTS}/backbones/{BB}/pretrain.json")
    return targets
