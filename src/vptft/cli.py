"""`python -m vptft <verb>`: one verb per workflow rule. Rules pass config values as one JSON `--spec`
(a Snakemake param, so a changed value reruns the job) and files as arguments; heavy imports happen per verb.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _pin_torch(threads: int | None) -> None:
    """Jobs that compute with torch are given --threads: pin its CPU arithmetic (vptft.reproducibility)."""
    if threads:
        from vptft.reproducibility import pin_torch

        pin_torch(threads)


def cmd_download(args, spec):
    from vptft import tasks
    from vptft.io import write_json

    info = tasks.prepare(tasks.get_task(spec["task"]), spec["data_dir"])
    write_json(args.out, info)
    print(json.dumps(info), flush=True)


def cmd_data_plan(args, spec):
    import tempfile

    from vptft import tasks
    from vptft.config import load_config
    from vptft.tasks.tfds_prepare import download_plan, plan_table

    config = load_config(args.config)
    chosen = [tasks.get_task(name) for name in config["tasks"]]
    builders = {}
    for task in chosen:
        if task.benchmark in ("vtab", "fgvc", "coop") and task.extra["builder"]:
            builders.setdefault(task.extra["builder"], []).append(task.name)
    if not builders:
        print(f"{args.config}: no TFDS tasks (the mini tasks are rendered locally)")
        return
    with tempfile.TemporaryDirectory() as scratch:
        plans = [download_plan(builder, scratch) for builder in builders]
    print(plan_table(plans, builders, args.bandwidth))


def _pool_features(spec, backbone_path):
    """(task, pool) -> the backbone's features of those records: what the prototype selection ranks by."""

    def features(task, pool):
        import numpy as np

        from vptft.backbones.factory import create_backbone, input_config
        from vptft.data import to_uint8_tensor
        from vptft.engine import pick_device
        from vptft.fid import backbone_features
        from vptft.tasks import load_images

        backbone = create_backbone(spec["backbone"], backbone_path)
        input_cfg = input_config(backbone, spec["normalization"])
        by_record = {}
        for split in dict.fromkeys(s for s, _ in pool):
            indices = [i for s, i in pool if s == split]
            images = to_uint8_tensor(
                load_images(task, split, indices, spec["data_dir"])[0], input_cfg["size"]
            )
            rows = backbone_features(backbone, images, input_cfg, pick_device(spec["device"]))
            by_record.update({(split, i): row for i, row in zip(indices, rows)})
        return np.stack([by_record[record] for record in pool])

    return features


def cmd_splits(args, spec):
    from vptft.io import read_json
    from vptft.splits import build_manifest, write_manifest

    pool_features = (
        _pool_features(spec, args.backbone) if spec["sizes"].get("selection") == "prototype" else None
    )
    manifest = build_manifest(
        spec["task"],
        spec["regime"],
        spec["sizes"],
        read_json(args.data_info),
        spec["data_dir"],
        pool_features=pool_features,
    )
    write_manifest(args.out, manifest)
    print({split: sum(map(len, parts.values())) for split, parts in manifest["splits"].items()}, flush=True)
    for note in ("capped", "missing_classes"):
        if manifest.get(note):
            print(f"[splits] {spec['task']} {spec['regime']}: {note}: {manifest[note]}", file=sys.stderr)


def cmd_pretrain(args, spec):
    from vptft.pretrain import run_pretrain

    run_pretrain(spec["pretrain"], spec["backbone"], args.out_dir, device=spec.get("device", "auto"))


def cmd_sweep(args, spec):
    from vptft.sweep import run_sweep_chunk

    start_from = args.start_from[0] if args.start_from else None
    run_sweep_chunk(spec, args.manifest, args.backbone, args.out, chunk=args.chunk, start_from=start_from)


def cmd_select(args, spec):
    from vptft.selection import merge_sweep

    best = merge_sweep(args.chunks, args.out, expected_points=spec.get("grid_size"))
    print(f"[select] {best}", flush=True)


def cmd_train(args, spec):
    from vptft.sweep import run_final

    if args.start_from and len(args.start_from) != len(args.seeds):
        raise ValueError(f"--start-from names {len(args.start_from)} files for {len(args.seeds)} seeds")
    start_from = dict(zip(args.seeds, args.start_from)) if args.start_from else None
    spec["train"]["checkpoint_minutes"] = args.checkpoint_minutes
    run_final(
        spec, args.manifest, args.backbone, args.sweep, args.runs_dir, seeds=args.seeds, start_from=start_from
    )


def cmd_stage1(args, spec):
    from vptft.sweep import run_stage1

    run_stage1(spec, args.manifest, args.backbone, args.sweep, args.out)


def cmd_cost(args, spec):
    from vptft.cost_report import run

    _, table = run(
        args.configfile,
        args.targets,
        args.step_times,
        args.all,
        args.cores,
        args.job_seconds,
        args.snakefile,
        args.directory,
        args.light_job_seconds,
    )
    print(table)


def cmd_collect(args, spec):
    from vptft.report import collect

    runs = collect(args.metrics, spec["family"], args.out, spec.get("vtab1k_n_train"))
    print(f"[collect] {len(runs)} runs of {runs.task.nunique()} task(s) -> {args.out}", flush=True)


def cmd_concat(args, spec):
    from vptft.io import atomic_path
    from vptft.report import read_runs

    runs = read_runs(args.tables)
    with atomic_path(args.out) as tmp:
        runs.to_csv(tmp, index=False)
    print(f"[concat] {len(runs)} runs -> {args.out}", flush=True)


def cmd_fid(args, spec):
    from vptft.fid import run_fid

    result = run_fid(spec, args.manifest, args.backbone, args.out)
    print(
        f"[fid] {spec['task']}: {result['fid_mean']:.3f} +- {result['fid_std']:.3f} ({result['features']})",
        flush=True,
    )


def cmd_attribution(args, spec):
    import pandas as pd

    from vptft.attribution import run_attribution

    runs = pd.concat([pd.read_csv(p) for p in args.runs_tables])
    means = runs[runs.regime == "vtab1k"].groupby("strategy").test_top1.mean()
    # examples the task's loser gets wrong and its winner right (ties: VPT's side, as in Figure 8)
    pair = ["vpt_deep", "full"] if means.get("full", 0) > means.get("vpt_deep", 0) else ["full", "vpt_deep"]
    spec = {**spec, "attribution": {**spec["attribution"], "pair": pair}}
    dirs = {"full": str(Path(args.full).parent), "vpt_deep": str(Path(args.vpt).parent)}
    summary = run_attribution(spec, args.manifest, args.backbone, dirs, args.out_dir)
    print(f"[attribution] {spec['task']} pair {pair}: {summary}", flush=True)


def cmd_ensemble(args, spec):
    from vptft.ensemble import seed_ensemble

    run_dirs = [str(Path(path).parent) for path in args.metrics]
    rows = seed_ensemble(spec, args.manifest, args.backbone, run_dirs, args.out)
    print(f"[ensemble] {spec['task']} {spec['strategy']}: {rows}", flush=True)


def cmd_latency(args, spec):
    import pandas as pd

    from vptft.io import atomic_path
    from vptft.latency import COLUMNS, measure_all

    rows = measure_all({**spec, "threads": args.threads or 1})
    with atomic_path(args.out) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)


def cmd_tsne(args, spec):
    from vptft.tsne import tsne_maps

    runs = {
        strategy: str(Path(path).parent)
        for strategy, path in zip(spec["strategies"], args.metrics, strict=True)
    }
    top1 = tsne_maps(spec, args.manifest, args.backbone, runs, args.out)
    print(f"[tsne] {spec['task']}: top-1 on the sampled test images {top1}", flush=True)


def cmd_examples(args, spec):
    from vptft.examples import task_examples, write_examples

    manifests = dict(zip(spec["tasks"], args.manifests, strict=True))
    arrays = task_examples(manifests, spec["data_dir"], spec["per_task"], spec["side"])
    write_examples(args.out, arrays)
    print(f"[examples] {len(manifests)} tasks x {spec['per_task']} images -> {args.out}", flush=True)


def cmd_worker(args, spec):
    from vptft.worker import serve

    serve(args.name, args.parent)


def cmd_bench(args, spec):
    from vptft.bench import run_bench, run_side_by_side

    if args.side_by_side > 1:
        if args.dag:
            raise ValueError("--dag times the DAG alone: run it without --side-by-side")
        sizes = [f"--{k}={v}" for k, v in (("batch", args.batch), ("repeats", args.repeats)) if v is not None]
        copy_args = ["--backbones", *args.backbones, "--strategies", *args.strategies, *sizes]
        copy_args += ["--device", args.device, "--threads", str(args.threads or 1)]
        run_side_by_side(args.side_by_side, copy_args, args.out, args.steps_out)
        return
    run_bench(
        args.backbones,
        args.out,
        args.steps_out,
        batch=args.batch,
        repeats=args.repeats,
        strategies=args.strategies,
        device=args.device,
        dag=args.dag,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vptft", description=__doc__)
    sub = parser.add_subparsers(dest="verb", required=True)

    def verb(name, func, help, spec=True):
        p = sub.add_parser(name, help=help)
        if spec:
            p.add_argument("--spec", required=True, help="JSON with the config values this step uses")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.set_defaults(func=func)
        return p

    p = verb(
        "download", cmd_download, "prepare a task's data (render the mini tasks, TFDS download for VTAB)"
    )
    p.add_argument("--out", required=True, help="data info JSON")
    p = verb(
        "data-plan",
        cmd_data_plan,
        "what preparing a config's TFDS data downloads, from TFDS's checksums",
        spec=False,
    )
    p.add_argument("--config", default="config/paper.yaml")
    p.add_argument("--bandwidth", type=float, default=10.0, help="MB/s, for the download-time estimate")
    p = verb("splits", cmd_splits, "write the split manifest of a task and regime")
    p.add_argument("--data-info", required=True)
    p.add_argument("--backbone", default=None, help="backbone checkpoint (the prototype few-shot selection)")
    p.add_argument("--out", required=True)
    p = verb("pretrain", cmd_pretrain, "pre-train the mini backbone on the rendered source set")
    p.add_argument("--out-dir", required=True)
    p = verb("sweep", cmd_sweep, "train one chunk of a strategy's grid on train -> val")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None, help="backbone checkpoint file")
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--start-from", nargs=1, default=None, help="weights a continuing strategy starts from")
    p.add_argument("--out", required=True)
    p = verb("select", cmd_select, "merge sweep chunks and select the grid point")
    p.add_argument("--chunks", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p = verb("train", cmd_train, "final runs of the selected grid point, one per seed, on train+val -> test")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument("--sweep", required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--runs-dir", required=True, help="seed<s>/ directories are written here")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=10.0,
        help="minutes between resume checkpoints (0: every epoch); not part of the spec, so changing "
        "it re-runs nothing",
    )
    p.add_argument(
        "--start-from",
        nargs="+",
        default=None,
        help="per seed (same order), the run a continuing strategy starts from",
    )
    p = verb(
        "stage1",
        cmd_stage1,
        "retrain a strategy's selected sweep point on train and save it whole (the "
        "backbone a continuing strategy sweeps on)",
    )
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument("--sweep", required=True)
    p.add_argument("--out", required=True)
    p = verb(
        "cost",
        cmd_cost,
        "jobs, optimiser steps, images and GPU-hours per rule of a config's targets, from "
        "Snakemake's dry run and per-image step times",
        spec=False,
    )
    p.add_argument("targets", nargs="*", help="files to build (default: the config's `all`)")
    p.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    p.add_argument(
        "--step-times",
        default=None,
        help="a `vptft bench --steps-out` CSV (default: cost.step_times, "
        "else the VPT paper's A100 figures for ViT-B/16)",
    )
    p.add_argument("--all", action="store_true", help="every job of the targets, also those already done")
    p.add_argument("--cores", type=int, default=1, help="local cores, for the wall-time line")
    p.add_argument(
        "--job-seconds",
        type=float,
        default=10.0,
        help="fixed seconds per job that loads a model (start-up, imports, data decoding)",
    )
    p.add_argument(
        "--light-job-seconds",
        type=float,
        default=1.0,
        help="fixed seconds per other job (collect, select, tables)",
    )
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--directory", default=None, help="Snakemake's working directory")
    p = verb("collect", cmd_collect, "one runs table from final runs' metrics.json files")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p = verb("concat", cmd_concat, "concatenate runs tables", spec=False)
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p = verb("fid", cmd_fid, "Frechet distance between a task's train images and the pre-training data")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument("--out", required=True)
    p = verb("attribution", cmd_attribution, "GradCAM and Integrated Gradients of FT and VPT on test images")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument(
        "--runs-tables",
        nargs="+",
        required=True,
        help="the task's collected vtab1k runs of full and vpt_deep (who won the task)",
    )
    p.add_argument("--full", required=True, help="metrics.json of the full finetuning run to explain")
    p.add_argument("--vpt", required=True, help="metrics.json of the VPT run to explain")
    p.add_argument("--out-dir", required=True)
    p = verb("ensemble", cmd_ensemble, "one strategy's seeds on one task as an ensemble (VPT Figure 15)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each seed's final run")
    p.add_argument("--out", required=True)
    p = verb(
        "latency",
        cmd_latency,
        "train / test latency, peak memory and forward GFLOPs per strategy and prompt length, measured here "
        "(the VPT paper's Table 12)",
    )
    p.add_argument("--out", required=True)
    p = verb("tsne", cmd_tsne, "t-SNE of each strategy's final features on test images (VPT Figures 9, 21)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--backbone", default=None)
    p.add_argument(
        "--metrics", nargs="+", required=True, help="metrics.json of each strategy's run, spec order"
    )
    p.add_argument("--out", required=True)
    p = verb("examples", cmd_examples, "a few train images of each task, for the example-images figure")
    p.add_argument("--manifests", nargs="+", required=True, help="a split manifest per task, in spec order")
    p.add_argument("--out", required=True)
    p = verb(
        "worker",
        cmd_worker,
        "run the jobs of a local snakemake run in forked children of one warm process (vptft.worker)",
        spec=False,
    )
    p.add_argument("--name", required=True, help="the abstract socket jobs connect to ($VPTFT_WORKER)")
    p.add_argument("--parent", type=int, default=None, help="exit once this process has gone and jobs ended")
    p = verb(
        "bench",
        cmd_bench,
        "time the training paths against side-by-side references (benchmarks/README.md)",
        spec=False,
    )
    p.add_argument("--backbones", nargs="*", default=["mini_vit", "vit_b16_in21k"], help="none: only --dag")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: per backbone, 64 / 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after a warm-up (default: 5 / 2)")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=["full", "linear", "vpt_deep"],
        help="strategies of the step-time CSV (prompt methods at p = 1, 50, 200)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (the GPU rows always use the GPU)")
    p.add_argument("--dag", action="store_true", help="also time a dry run of the paper setup's whole DAG")
    p.add_argument(
        "--side-by-side",
        type=int,
        default=1,
        metavar="N",
        help="run N copies at once (each --threads, default 1), as `snakemake -cN` runs jobs: step times under "
        "a local run's own load, for `vptft cost`",
    )
    p.add_argument("--out", default="results/bench/bench.csv")
    p.add_argument("--steps-out", default="results/bench/step_times.csv")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    spec = json.loads(args.spec) if "spec" in args else {}
    t0 = time.perf_counter()  # before torch's import (in _pin_torch): a job's time includes it
    _pin_torch(args.threads)
    try:
        args.func(args, spec)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        print(f"vptft {args.verb}: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"[vptft {args.verb}] done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
