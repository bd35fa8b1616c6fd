import json
import math
import os
import shlex

from vptft.config import grid_size, validate_config
from vptft.tasks import get_task


# Schema + semantic checks before any job runs; fills in the schema's defaults.
validate_config(config)

BENCH = config["benchmark"]
BB = config["backbone"]
DATA = config["data_dir"]
RESULTS = f"results/{BENCH}"
RUNS = f"{RESULTS}/runs/{BB}"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
NOTEBOOKS = os.path.join(workflow.basedir, "notebooks")  # absolute: the workdir may be elsewhere (-d)


wildcard_constraints:
    task="[a-z0-9_]+",
    strategy="[a-z0-9_]+",
    regime="[a-z0-9_]+",
    seed="[0-9]+",
    chunk="[0-9]+",
    table="table[0-9]+",


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


def run_spec(wildcards):
    entry = config["strategies"][wildcards.strategy]
    return spec(
        task=wildcards.task,
        regime=wildcards.regime,
        strategy=wildcards.strategy,
        backbone=BB,
        data_dir=DATA,
        train=config["train"],
        grid=entry["grid"],
        options=entry.get("options", {}),
        sweep_seed=config["train"]["sweep_seed"],
        sweep_chunk_size=config["train"]["sweep_chunk_size"],
    )


def n_chunks(strategy):
    size = config["train"]["sweep_chunk_size"]
    points = grid_size(config["strategies"][strategy]["grid"])
    return math.ceil(points / size) if size else 1


def table_tasks(table):
    groups = config["tables"][table]["groups"]
    return [t for t in config["tasks"] if get_task(t).group in groups]


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
