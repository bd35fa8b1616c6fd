"""`vptft cost`: what a set of targets will cost, per rule and in total, before anything is submitted.

The job list is Snakemake's own (a dry run of the same Snakefile, config files and targets); each job is
priced by vptft.cost with the step times the Snakefile sizes its runtimes with.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from vptft import cost, study
from vptft.config import validate_config

RULE_LINE = re.compile(r"^(?:local)?rule (\w+):$")
FIELD_LINE = re.compile(r"^\s+(wildcards|resources): (.*)$")


def merged_config(configfiles: list[str], overrides: dict | None = None) -> dict:
    """The config Snakemake would see: the files merged in order (nested keys replaced key by key)."""

    def merge(base: dict, extra: dict) -> dict:
        for key, value in extra.items():
            base[key] = merge(dict(base.get(key) or {}), value) if isinstance(value, dict) else value
        return base

    config: dict = {}
    for path in configfiles:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return validate_config(merge(config, overrides or {}))


def parse_fields(text: str) -> dict:
    return dict(part.split("=", 1) for part in text.split(", ") if "=" in part)


def dry_run_jobs(
    snakefile, configfiles: list[str], targets: list[str], every_job: bool, workdir=None
) -> list:
    """(rule, wildcards, resources) of every job a dry run lists: what would run (every_job: --forceall)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(snakefile), "--configfile", *configfiles]
    if workdir:
        cmd += ["-d", str(workdir)]
    cmd += ["--forceall"] * every_job + ["--", *targets]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"the dry run failed ({' '.join(cmd)}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    jobs, current = [], None
    for line in done.stdout.splitlines():
        if match := RULE_LINE.match(line):
            current = {"rule": match.group(1), "wildcards": {}, "resources": {}}
            jobs.append(current)
        elif current and (match := FIELD_LINE.match(line)):
            current[match.group(1)] = parse_fields(match.group(2))
    return [job for job in jobs if job["rule"] != "all"]


# Rules whose jobs load a model (torch + timm imports, a backbone, a task's images) before any work: they pay
# `job_seconds`; every other rule (collect, select, tables, file naming) only `light_job_seconds`.
MODEL_RULES = frozenset({"pretrain", "sweep", *cost.FINAL_RULES, "stage1", "fid", "attribution"})


def price(
    config: dict, jobs: list[dict], times: cost.StepTimes, job_seconds: float, light_job_seconds: float = 1.0
) -> list[dict]:
    """Per rule: jobs, optimiser steps, images, device-hours (GPU where the rule asks for one), hours
    requested from the scheduler."""
    limit = int(
        config["resources"].get("train", {}).get("runtime")
        or config["resources"].get("default", {}).get("runtime")
        or 30
    )
    planners = cost.backbone_planners(config, limit, times)
    rows: dict = defaultdict(
        lambda: {
            "jobs": 0,
            "steps": 0,
            "images": 0,
            "seconds": 0.0,
            "eval_seconds": 0.0,
            "requested_min": 0.0,
            "gpu": False,
        }
    )
    for job in jobs:
        planner = planners[job["wildcards"].get("backbone", config["backbone"])]
        estimate = cost.job_estimate(planner, job["rule"], job["wildcards"], study.draws_curves)
        row = rows[job["rule"]]
        row["jobs"] += 1
        row["steps"] += estimate.steps
        row["images"] += estimate.images
        row["seconds"] += estimate.seconds + (
            job_seconds if job["rule"] in MODEL_RULES else light_job_seconds
        )
        row["eval_seconds"] += estimate.eval_seconds
        row["requested_min"] += float(job["resources"].get("runtime", 0) or 0)
        row["gpu"] |= int(job["resources"].get("gpu", 0) or 0) > 0
    return [{"rule": rule, **values, "hours": values["seconds"] / 3600} for rule, values in rows.items()]


def format_table(rows: list[dict], source: str, cores: int) -> str:
    header = f"{'rule':<20}{'jobs':>7}{'steps':>12}{'images':>15}{'hours':>11}  device  {'requested h':>11}"
    lines = [f"step times: {source}", header, "-" * len(header)]
    for row in sorted(rows, key=lambda r: -r["hours"]):
        lines.append(
            f"{row['rule']:<20}{row['jobs']:>7}{row['steps']:>12,}{row['images']:>15,}"
            f"{row['hours']:>11.2f}  {'GPU' if row['gpu'] else 'CPU':<6}  {row['requested_min'] / 60:>11.1f}"
        )
    gpu = sum(r["hours"] for r in rows if r["gpu"])
    total = sum(r["hours"] for r in rows)
    final_eval = sum(r["eval_seconds"] for r in rows if r["rule"] in cost.FINAL_RULES) / 3600
    lines += [
        "-" * len(header),
        (
            f"{'total':<20}{sum(r['jobs'] for r in rows):>7}{sum(r['steps'] for r in rows):>12,}"
            f"{sum(r['images'] for r in rows):>15,}{total:>11.2f}"
        ),
        (
            f"GPU-hours: {gpu:.1f}, of which test evaluation in final runs {final_eval:.1f} "
            f"({100 * final_eval / max(total, 1e-9):.0f}% of all; train.curve_points sets how often)"
        ),
        f"all jobs on {cores} local core(s), one job per core: {total / cores * 60:.1f} min of wall time",
    ]
    return "\n".join(lines)


def run(
    configfiles: list[str],
    targets: list[str],
    step_times_file=None,
    every_job=False,
    cores=1,
    job_seconds=10.0,
    snakefile="Snakefile",
    workdir=None,
    light_job_seconds=1.0,
) -> tuple[list[dict], str]:
    config = merged_config(configfiles)
    times = cost.step_times(config, step_times_file)
    if times is None:
        raise SystemExit(
            f"no step times for backbone {config['backbone']!r}: measure them with "
            "`python -m vptft bench --steps-out FILE` and pass --step-times FILE "
            "(or set cost.step_times)"
        )
    jobs = dry_run_jobs(snakefile, configfiles, targets, every_job, workdir)
    rows = price(config, jobs, times, job_seconds, light_job_seconds)
    source = times.source
    borrowed = [
        k for k in study.backbones(config)[1:] if cost.step_times(study.backbone_view(config, k)) is None
    ]
    if borrowed:
        source += (
            f"; backbones without step times of their own, priced with {config['backbone']}'s: {borrowed}"
        )
    return rows, format_table(rows, source, cores)
