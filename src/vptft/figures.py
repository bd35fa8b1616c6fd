"""The paper's figures from collected runs tables (matplotlib), and the small tables behind them.

Colours follow the study: full finetuning (FT) blue, VPT orange, Mixed green, FT-then-PT red, linear grey.
Every figure is written atomically, with the provenance stamp (benchmark, backbone, config hash) in its PNG
text chunks when given one; the numbers it draws come back as a DataFrame so a notebook can show them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vptft import significance
from vptft import tasks as task_registry
from vptft.io import atomic_path
from vptft.strategies import get_strategy, variant_problems

GROUP_ORDER = {"natural": 0, "specialized": 1, "structured": 2, "fgvc": 3, "coop": 4}


def label(strategy: str) -> str:
    """The legend name, from the strategy registry; a variant's is its base's with the options its name fixes:
    VPT [location=add]."""
    declared = _declared(strategy)
    return declared.label if declared else strategy


def color(strategy: str) -> str:
    declared = _declared(strategy)
    return declared.color if declared else "#8c564b"


def _declared(strategy: str):
    return None if variant_problems(strategy) else get_strategy(strategy)


def save(fig, path, legend_below: bool = False, stamp: dict | None = None, below=None) -> None:
    """Lay out (room for the suptitle, and a figure legend below if there is one) and write atomically, with the
    stamp as PNG metadata. `below(fig)` draws into the band kept free below the panels, after the layout."""
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.4 / height if legend_below or below else 0, 1, 1 - 0.45 / height))
    if below is not None:
        below(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip("."), metadata=stamp)
    plt.close(fig)


def winners(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task: mean test top-1 over seeds of FT, VPT (and linear where it ran), the winner of FT vs VPT, and
    FT - VPT."""
    means = runs.pivot_table(index="task", columns="strategy", values="test_top1", aggfunc="mean")
    missing = {"full", "vpt_deep"} - set(means.columns)
    if missing:
        raise ValueError(f"the winner of FT vs VPT needs runs of both; none of {sorted(missing)}")
    out = pd.DataFrame(index=means.index)
    for strategy in ("full", "vpt_deep", "linear"):
        if strategy in means.columns:
            out[strategy] = means[strategy]
    out["winner"] = np.where(means["full"] > means["vpt_deep"], "FT", "VPT")
    out["ft_minus_vpt"] = means["full"] - means["vpt_deep"]
    return out


def fid_table(fid_files, runs: pd.DataFrame) -> pd.DataFrame:
    """fid.csv: one row per task with its FID (mean, std over reference samples), quadrant facts and winner."""
    rows = [json.loads(Path(p).read_text()) for p in fid_files]
    fid = pd.DataFrame(rows).set_index("task")
    fid["task_disparity"] = [task_registry.get_task(t).task_disparity for t in fid.index]
    table = fid[["group", "domain", "task_disparity", "features", "fid_mean", "fid_std", "repeats"]].join(
        winners(runs[runs.regime == "vtab1k"]), how="left"
    )
    return table.sort_values("fid_mean")


def bar_styles(table: pd.DataFrame) -> list[tuple[str, str | None]]:
    """(colour, hatch) of each task's bar: the winner's colour, hatched where task disparity is high."""
    return [
        (color("full" if row.winner == "FT" else "vpt_deep"), "//" if row.task_disparity == "high" else None)
        for row in table.itertuples()
    ]


def figure3(table: pd.DataFrame, path, stamp: dict | None = None) -> None:
    """Bars of FID per task coloured by the winner (FT / VPT), hatched where task disparity is high; below,
    test top-1 of FT, VPT and the linear probe per task in the same order."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(6, 0.6 * len(table) + 2), 7), sharex=True, height_ratios=[3, 2]
    )
    x = np.arange(len(table))
    for i, (bar_color, hatch) in enumerate(bar_styles(table)):
        row = table.iloc[i]
        top.bar(
            i,
            row.fid_mean,
            yerr=row.fid_std,
            capsize=3,
            color=bar_color,
            hatch=hatch,
            edgecolor="black",
            linewidth=0.6,
        )
    top.set_ylabel(f"FID to pre-training data\n({table.features.iloc[0]})")
    from matplotlib.patches import Patch

    top.legend(
        handles=[
            Patch(color=color("full"), label="FT wins"),
            Patch(color=color("vpt_deep"), label="VPT wins"),
            Patch(facecolor="white", edgecolor="black", hatch="//", label="high task disparity"),
        ],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    top.set_title("Figure 3: distribution disparity (FID) per task and which of FT / VPT wins")
    for strategy, marker in (("full", "o"), ("vpt_deep", "s"), ("linear", "^")):
        if strategy in table.columns:
            bottom.plot(
                x,
                table[strategy],
                marker=marker,
                linestyle="none",
                color=color(strategy),
                label=label(strategy),
            )
    bottom.set_ylabel("test top-1 (%)")
    bottom.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data, never on it
    bottom.set_xticks(x, table.index, rotation=45, ha="right")
    save(fig, path, stamp=stamp)


def scaling_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean test top-1 over seeds per (task, size, strategy), with group and the capped flag."""
    return (
        runs.groupby(["group", "task", "size", "strategy"])
        .agg(top1=("test_top1", "mean"), std=("test_top1", lambda x: x.std(ddof=0)), capped=("capped", "any"))
        .reset_index()
    )


def figure4(runs: pd.DataFrame, strategies: list[str], path, stamp: dict | None = None) -> pd.DataFrame:
    """Accuracy vs train size (log x) per task, one panel per group; FT solid, VPT dotted; capped sizes
    drawn hollow."""
    means = scaling_means(runs[runs.strategy.isin(strategies)])
    groups = sorted(means.group.unique(), key=GROUP_ORDER.get)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    styles = {"full": "-", "vpt_deep": ":"}
    markers = "osD^vP*X"
    for ax, group in zip(axes[0], groups):
        sub = means[means.group == group]
        for t, task in enumerate(sorted(sub.task.unique())):
            marker = markers[t % len(markers)]
            for strategy in strategies:
                line = sub[(sub.task == task) & (sub.strategy == strategy)].sort_values("size")
                if line.empty:
                    continue
                ax.plot(
                    line["size"],
                    line.top1,
                    styles.get(strategy, "--"),
                    color=color(strategy),
                    marker=marker,
                    label=f"{task} {label(strategy)}",
                )
                capped = line[line.capped]
                ax.plot(capped["size"], capped.top1, marker, color="white", markeredgecolor=color(strategy))
        ax.set_xscale("log")
        sizes = sorted(sub["size"].unique())
        ax.set_xticks(sizes, [str(int(size)) for size in sizes])
        ax.minorticks_off()
        ax.set_xlabel("train images (log scale)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(group)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        "Figure 4: data scaling - FT (blue, solid) vs VPT (orange, dotted), a marker per task; "
        "hollow = size capped by the task's data"
    )
    save(fig, path, stamp=stamp)
    return means


def scaling_per_task(
    runs: pd.DataFrame, strategies: list[str], group: str, path, title: str, stamp: dict | None = None
) -> pd.DataFrame:
    """Figures 14-16: test top-1 vs train size (log x) of every scaling task of one group, a panel per task, a
    line per strategy (mean over seeds, band: their std); capped sizes hollow. Returns the means drawn."""
    means = scaling_means(runs[runs.strategy.isin(strategies)])
    means = means[means.group == group]
    tasks = sorted(means.task.unique())
    if not tasks:  # the file still says why it is empty
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {group} task has scaling runs in this config", ha="center", va="center")
        fig.suptitle(title)
        save(fig, path, stamp=stamp)
        return means
    cols = min(4, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for strategy in strategies:
            line = means[(means.task == task) & (means.strategy == strategy)].sort_values("size")
            if line.empty:
                continue
            ax.plot(line["size"], line.top1, "-o", color=color(strategy), markersize=4, label=label(strategy))
            ax.fill_between(
                line["size"],
                line.top1 - line["std"],
                line.top1 + line["std"],
                color=color(strategy),
                alpha=0.2,
            )
            capped = line[line.capped]
            ax.plot(capped["size"], capped.top1, "o", color="white", markeredgecolor=color(strategy))
        sizes = sorted(means[means.task == task]["size"].unique())
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(int(size)) for size in sizes])
        ax.minorticks_off()
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("train images (log scale)")
        ax.set_ylabel("test top-1 (%)")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}: data scaling of every {group} task (band: seed std; hollow: size capped)")
    save(fig, path, legend_below=True, stamp=stamp)
    return means


def read_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's curves.csv, tagged with task, group, strategy and seed."""
    frames = []
    for row in runs.itertuples():
        curves = pd.read_csv(row.curves)
        frames.append(
            curves.assign(
                task=row.task,
                group=row.group,
                strategy=row.strategy,
                seed=row.seed,
                size=getattr(row, "size", None),
                regime=row.regime,
            )
        )
    return pd.concat(frames, ignore_index=True)


def loss_grid(
    curves: pd.DataFrame,
    tasks: list[str],
    strategies: list[str],
    path,
    title: str,
    log: bool = False,
    stamp: dict | None = None,
) -> None:
    """Train (solid) and test (dashed) loss per epoch, mean over seeds, one panel per task."""
    cols = min(4, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        sub = curves[curves.task == task]
        for strategy in strategies:
            s = sub[sub.strategy == strategy]
            if s.empty:
                continue
            train = s.groupby("epoch").train_loss.mean()
            ax.plot(train.index, train.values, "-", color=color(strategy), label=f"{label(strategy)} train")
            test = s.dropna(subset=["test_loss"]).groupby("epoch").test_loss.mean()
            ax.plot(
                test.index,
                test.values,
                "--",
                marker=".",
                color=color(strategy),
                label=f"{label(strategy)} test",
            )
        ax.set_title(f"{task} ({task_registry.get_task(task).group})", fontsize=9)
        _epoch_axis(ax)
        ax.set_ylabel("loss" + (" (log)" if log else ""))
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}: train (solid) and test (dashed) loss, mean over seeds")
    save(fig, path, legend_below=True, stamp=stamp)


def overfitting(
    runs: pd.DataFrame,
    strategies: list[str],
    path,
    stamp: dict | None = None,
    tasks: list[str] | None = None,
    title: str = "Figure 6",
) -> None:
    """Figures 6 and 13: train and test loss per epoch of the scaling runs, one panel per task (`tasks`, default
    every task with scaling runs), one line per size: does more data close the train/test gap?"""
    runs = runs[runs.strategy.isin(strategies)]
    curves = read_curves(runs[runs.task.isin(tasks)] if tasks else runs)
    tasks = sorted(curves.task.unique())
    fig, axes = plt.subplots(
        len(strategies), len(tasks), figsize=(4 * len(tasks), 3 * len(strategies)), squeeze=False
    )
    for r, strategy in enumerate(strategies):
        for c, task in enumerate(tasks):
            ax = axes[r, c]
            sub = curves[(curves.task == task) & (curves.strategy == strategy)]
            sizes = sorted(sub["size"].dropna().unique())
            for k, size in enumerate(sizes):
                shade = plt.cm.viridis(k / max(1, len(sizes) - 1))
                s = sub[sub["size"] == size]
                ax.plot(*_mean_curve(s, "train_loss"), "-", color=shade, label=f"n={int(size)} train")
                ax.plot(*_mean_curve(s, "test_loss"), "--", color=shade, label=f"n={int(size)} test")
            ax.set_title(f"{task} - {label(strategy)}", fontsize=9)
            _epoch_axis(ax)
            ax.set_ylabel("loss")
    axes[0, -1].legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{title}: train (solid) and test (dashed) loss with growing train sets")
    save(fig, path, stamp=stamp)


def _epoch_axis(ax) -> None:
    """Epochs are whole numbers: no 1.5 or 2.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _mean_curve(curves: pd.DataFrame, column: str):
    series = curves.dropna(subset=[column]).groupby("epoch")[column].mean()
    return series.index, series.values


def _class_namer(data: dict):
    """label -> 'name (index)' where the task names its classes (maps.npz `class_names`), else the index."""
    names = list(data.get("class_names", []))
    return lambda i: f"{names[int(i)]} ({int(i)})" if names else str(int(i))


def attribution_panels(
    maps: dict[str, dict], tasks: list[str], kind: str, path, title: str, stamp: dict | None = None
) -> pd.DataFrame:
    """Rows of (input | FT map | VPT map) for the chosen examples of each task, with true / predicted labels.
    `maps[task]` holds the arrays of attribution.run_attribution's maps.npz; `kind`: gradcam or ig."""
    rows = []
    for task in tasks:
        data = maps[task]
        for i in range(len(data["labels"])):
            rows.append((task, i))
    fig, axes = plt.subplots(max(1, len(rows)), 3, figsize=(8.5, 2.5 * max(1, len(rows))), squeeze=False)
    index = []
    shown = None
    for r, (task, i) in enumerate(rows):
        data = maps[task]
        name = _class_namer(data)
        image = np.transpose(data["images"][i], (1, 2, 0))
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"{task}: true {name(data['labels'][i])}", fontsize=8)
        for c, strategy in enumerate(("full", "vpt_deep"), start=1):
            heat = data[f"{kind}_{strategy}"][i]
            scale = float(np.max(np.abs(heat))) or 1.0  # each map relative to its own largest value
            axes[r, c].imshow(image)
            height, width = image.shape[:2]
            shown = axes[r, c].imshow(
                heat / scale,
                cmap="jet",
                alpha=0.5,
                vmin=0.0 if kind == "gradcam" else -1.0,
                vmax=1.0,
                extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                interpolation="bilinear",
            )
            pred = int(data[f"pred_{strategy}"][i])
            axes[r, c].set_title(
                f"{label(strategy)} {kind}: pred {name(pred)}",
                fontsize=8,
                color="green" if pred == int(data["labels"][i]) else "red",
            )
        index.append(
            {
                "task": task,
                "example": i,
                "test_index": int(data["index"][i]),
                "label": int(data["labels"][i]),
                "pred_full": int(data["pred_full"][i]),
                "pred_vpt_deep": int(data["pred_vpt_deep"][i]),
                "map": kind,
                "wrong_right": "/".join(map(str, data["pair"])),
            }
        )
    for ax in axes.flat:
        ax.axis("off")
    if not rows:
        axes[0, 1].text(
            0.5,
            0.5,
            "no test image where one strategy is wrong and the other right",
            ha="center",
            va="center",
            fontsize=9,
        )
    fig.suptitle(title, fontsize=10)

    def colour_bar(fig):
        from matplotlib.ticker import MaxNLocator

        what = "GradCAM" if kind == "gradcam" else "Integrated Gradients"
        height = fig.get_figheight()
        bar = fig.add_axes((0.3, 0.16 / height, 0.4, 0.1 / height))
        fig.colorbar(shown, cax=bar, orientation="horizontal")
        bar.xaxis.set_major_locator(MaxNLocator(5))
        bar.set_xlabel(f"{what}, relative to its map's largest |value|", fontsize=8)

    save(fig, path, stamp=stamp, below=colour_bar if shown is not None else None)
    return pd.DataFrame(
        index,
        columns=[
            "task",
            "example",
            "test_index",
            "label",
            "pred_full",
            "pred_vpt_deep",
            "map",
            "wrong_right",
        ],
    )


def fraction_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean test top-1 over seeds per (task, fraction, strategy)."""
    return (
        runs.groupby(["task", "fraction", "strategy"])
        .agg(top1=("test_top1", "mean"), seeds=("seed", "nunique"))
        .reset_index()
    )


def vpt_figure3(
    runs: pd.DataFrame, strategies: list[str], path, stamp: dict | None = None, reference: str = "vpt_deep"
) -> pd.DataFrame:
    """The VPT paper's Figure 3: test top-1 vs train-data fraction averaged over the fine-grained tasks, VPT-deep
    against each other strategy in its own panel, the gap between them shaded (green where VPT leads)."""
    means = fraction_means(runs[runs.strategy.isin(strategies)])
    tasks_of = means.groupby("strategy").task.nunique()
    average = means.groupby(["strategy", "fraction"]).top1.mean().unstack("strategy").sort_index()
    others = [s for s in strategies if s != reference and s in average.columns]
    if reference not in average.columns or not others:
        raise ValueError(
            f"Figure 3 compares {reference} with other strategies; the runs have {list(average)}"
        )
    fig, axes = plt.subplots(1, len(others), figsize=(4.2 * len(others), 3.6), squeeze=False)
    x = average.index.to_numpy()
    for ax, other in zip(axes[0], others):
        ours, theirs = average[reference].to_numpy(), average[other].to_numpy()
        ax.plot(x, ours, "-o", color=color(reference), label=label(reference))
        ax.plot(x, theirs, "--s", color=color(other), label=label(other))
        ax.fill_between(x, ours, theirs, where=ours >= theirs, color="tab:green", alpha=0.2, interpolate=True)
        ax.fill_between(x, ours, theirs, where=ours < theirs, color="tab:red", alpha=0.2, interpolate=True)
        ax.set_xticks(x, [f"{int(f)}%" for f in x])
        ax.set_xlabel("train data (% of the fgvc train part)")
        ax.set_ylabel(f"mean test top-1 over {int(tasks_of.min())} tasks (%)")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle("VPT Figure 3: accuracy vs train-data fraction, fine-grained tasks (green: VPT-deep ahead)")
    save(fig, path, stamp=stamp)
    return average


def vpt_figure20(runs: pd.DataFrame, strategies: list[str], path, stamp: dict | None = None) -> pd.DataFrame:
    """The VPT paper's Figure 20: Figure 3 per task (one panel per task, a line per strategy)."""
    means = fraction_means(runs[runs.strategy.isin(strategies)])
    tasks = sorted(means.task.unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for strategy in strategies:
            line = means[(means.task == task) & (means.strategy == strategy)].sort_values("fraction")
            if len(line):
                ax.plot(line.fraction, line.top1, "-o", color=color(strategy), label=label(strategy))
        ax.set_xticks(sorted(means.fraction.unique()))
        ax.set_xlabel("train data (%)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(task)
    axes[0][-1].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("VPT Figure 20: accuracy vs train-data fraction per fine-grained task")
    save(fig, path, stamp=stamp)
    return means


def model_scale_means(runs: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Per (model, strategy, group): the mean over the group's tasks of each task's seed-mean test top-1. `model`
    is the row's backbone (the CSV's provenance column `backbone` names them all, joined by "+")."""
    per_task = runs.groupby(["backbone", "strategy", "group", "task"]).test_top1.mean().reset_index()
    per_task = per_task[per_task.group.isin(groups)].rename(columns={"backbone": "model"})
    return (
        per_task.groupby(["model", "strategy", "group"])
        .agg(top1=("test_top1", "mean"), tasks=("task", "nunique"))
        .reset_index()
    )


def vpt_figure4(
    runs: pd.DataFrame,
    backbones: list[str],
    strategies: list[str],
    groups: list[str],
    path,
    stamp: dict | None = None,
) -> pd.DataFrame:
    """The VPT paper's Figure 4: each strategy's VTAB-1k group mean on backbones of growing size (x in the
    configured order), one panel per group."""
    means = model_scale_means(runs[runs.strategy.isin(strategies) & runs.backbone.isin(backbones)], groups)
    missing = sorted(set(backbones) - set(means.model))
    if missing:
        raise ValueError(f"Figure 4: no runs on backbones {missing}")
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    x = range(len(backbones))
    for ax, group in zip(axes[0], groups):
        sub = means[means.group == group]
        for strategy in strategies:
            line = sub[sub.strategy == strategy].set_index("model").reindex(backbones)
            ax.plot(x, line.top1, "-o", color=color(strategy), label=label(strategy))
        ax.set_xticks(list(x), backbones, rotation=20, ha="right")
        n = int(sub.tasks.max())
        ax.set_ylabel(f"mean test top-1 over {n} task{'s' * (n != 1)} (%)")
        ax.set_title(group)
    axes[0][-1].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("VPT Figure 4: VTAB-1k group means across backbone sizes")
    save(fig, path, stamp=stamp)
    return means


def ablation_means(runs: pd.DataFrame, strategies: list[str], tasks: list[str]) -> pd.DataFrame:
    """Per (task, strategy) of an ablation: the mean and standard deviation of test top-1 over seeds, and the
    seeds; then a `mean` row per strategy (the mean over tasks of the task means)."""
    runs = runs[runs.strategy.isin(strategies) & runs.task.isin(tasks)]
    per_task = (
        runs.groupby(["task", "strategy"])
        .agg(top1=("test_top1", "mean"), std=("test_top1", "std"), seeds=("seed", "nunique"))
        .reset_index()
    )
    missing = sorted({(t, s) for t in tasks for s in strategies} - set(zip(per_task.task, per_task.strategy)))
    if missing:
        raise ValueError(f"ablation: no runs of {missing}")
    overall = per_task.groupby("strategy").agg(top1=("top1", "mean"), seeds=("seeds", "min")).reset_index()
    table = pd.concat([per_task, overall.assign(task="mean")], ignore_index=True)
    order = {s: i for i, s in enumerate(strategies)}, {t: i for i, t in enumerate([*tasks, "mean"])}
    return table.sort_values(
        ["task", "strategy"], key=lambda c: c.map(order[1] if c.name == "task" else order[0])
    ).reset_index(drop=True)


def ablation(
    runs: pd.DataFrame, strategies: list[str], tasks: list[str], title: str, path, stamp: dict | None = None
) -> pd.DataFrame:
    """An ablation of the VPT or Adapt paper: test top-1 of each setting (a strategy or a variant of it) per task
    and averaged over the tasks, as grouped bars with the seed standard deviation as error bars."""
    means = ablation_means(runs, strategies, tasks)
    groups = [*tasks, "mean"]
    width = 0.8 / len(strategies)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) * max(1, len(strategies) / 3)), 3.6))
    for i, strategy in enumerate(strategies):
        sub = means[means.strategy == strategy].set_index("task").reindex(groups)
        x = [j + (i - (len(strategies) - 1) / 2) * width for j in range(len(groups))]
        shade = plt.get_cmap("tab10")(i % 10)  # one colour per setting: variants share their base's colour
        ax.bar(x, sub.top1, width, yerr=sub["std"].fillna(0), color=shade, label=label(strategy))
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    low, high = int(means.seeds.min()), int(means.seeds.max())
    ax.set_ylabel(
        f"test top-1 (%), mean of {low if low == high else f'{low}-{high}'} seed{'s' if high > 1 else ''}"
    )
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    save(fig, path, stamp=stamp)
    return means


def hparam_sensitivity(sweeps, grids: dict, task: str, path, stamp: dict | None = None) -> pd.DataFrame:
    """The VPT paper's Figure 17: each strategy's validation top-1 over its sweep on one task, against the lr
    (log axis), a line per combination of its other grid values; the selected point starred. `sweeps`: (strategy,
    its sweep.csv) pairs in panel order (or a dict); `grids`: strategy -> its grid's keys."""
    sweeps = dict(sweeps)
    rows = []
    for strategy, sweep in sweeps.items():
        frame = pd.read_csv(sweep)
        others = [k for k in grids[strategy] if k != "lr"]
        frame = frame.assign(strategy=strategy)
        frame["setting"] = [
            ", ".join(f"{k}={v}" for k, v in zip(others, values))
            for values in frame[others].itertuples(index=False)
        ]
        rows.append(frame[["strategy", "setting", "lr", "val_top1", "selected"]])
    points = pd.concat(rows, ignore_index=True)
    fig, axes = plt.subplots(1, len(sweeps), figsize=(3.3 * len(sweeps), 3.8), squeeze=False, sharey=True)
    for ax, strategy in zip(axes[0], sweeps):
        sub = points[points.strategy == strategy]
        for setting, line in sub.groupby("setting", sort=False):
            line = line.sort_values("lr")
            ax.plot(line.lr, line.val_top1, "-o", markersize=4, label=setting or "lr only")
        best = sub[sub.selected == 1]
        ax.plot(best.lr, best.val_top1, "*", color="black", markersize=12, label="selected")
        ax.set_xscale("log")
        ax.set_xticks(sorted(sub.lr.unique()), [f"{v:g}" for v in sorted(sub.lr.unique())])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("base lr")
        ax.set_title(label(strategy), fontsize=10)
        ax.legend(frameon=False, fontsize=6)
    axes[0][0].set_ylabel("val top-1 (%)")
    fig.suptitle(f"VPT Figure 17: validation top-1 over each strategy's grid on {task}")
    save(fig, path, stamp=stamp)
    return points


def vpt_figure16(
    tests: pd.DataFrame, reference_label: str, alpha: float, path, stamp: dict | None = None
) -> None:
    """The VPT paper's Figure 16: -log10 p of the reference against each strategy per task and across tasks,
    coloured by which side is ahead; cells without a test are blank and say why."""
    p = significance.matrix(tests)
    diff = tests.pivot(index="strategy", columns="task", values="diff").reindex_like(p)
    score = np.sign(diff.to_numpy(float)) * -np.log10(p.to_numpy(float).clip(1e-12, 1))
    limit = max(2.0, np.nanmax(np.abs(score)) if np.isfinite(score).any() else 2.0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * p.shape[1], 1.2 + 0.45 * p.shape[0]))
    image = ax.imshow(score, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(p.shape[0]):
        for j in range(p.shape[1]):
            value = p.iat[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.2g}" + ("*" if value < alpha else "")
            dark = np.isfinite(score[i, j]) and abs(score[i, j]) > 0.6 * limit
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_xticks(range(p.shape[1]), list(p.columns), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(p.shape[0]), [label(s) for s in p.index], fontsize=8)
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"-log10 p (> 0: {reference_label} ahead)", fontsize=8)
    fig.suptitle(
        f"VPT Figure 16: {reference_label} vs each strategy (Welch per task, Wilcoxon across tasks; * p < {alpha})",
        fontsize=9,
    )
    save(fig, path, stamp=stamp)


def adapt_figure3(metrics: dict, path, stamp: dict | None = None, panels: int = 6) -> pd.DataFrame:
    """Adapt's Figure 3: the binary token mask of every layer (rows) at evenly spaced epochs of one run, from the
    pruning history its metrics record (`summary.pruned_epoch`: the epoch each token was pruned in, -1 kept).
    Returns the active tokens per layer at each drawn epoch."""
    pruned = np.asarray(metrics["summary"]["pruned_epoch"])
    epochs = int(metrics["epochs"])
    shown = sorted({round(i * (epochs - 1) / max(1, panels - 1)) for i in range(panels)})
    masks = {e: (pruned == -1) | (pruned > e) for e in shown}  # active at the end of epoch e (0-based)
    fig, axes = plt.subplots(1, len(shown), figsize=(1.6 * len(shown) + 1, 2.6), squeeze=False)
    for ax, epoch in zip(axes[0], shown):
        ax.imshow(masks[epoch], cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"epoch {epoch + 1}: {int(masks[epoch].sum())}", fontsize=8)
        ax.set_xlabel("token", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks(range(pruned.shape[0]))
    axes[0][0].set_ylabel("layer", fontsize=8)
    fig.suptitle(
        f"Adapt Figure 3: active key/value prompt tokens (black) of {metrics['strategy']} on {metrics['task']}, "
        f"seed {metrics['seed']}",
        fontsize=9,
    )
    save(fig, path, stamp=stamp)
    return pd.DataFrame(
        [
            {"epoch": e + 1, "layer": i, "active": int(m[i].sum())}
            for e, m in masks.items()
            for i in range(len(m))
        ]
    )


def ensemble_summary(members: pd.DataFrame) -> pd.DataFrame:
    """Per (task, strategy) from the ensemble jobs' rows: the seeds' mean and best test top-1 and the ensemble's;
    then a `mean` row per strategy (the mean over tasks)."""
    seeds = members[members.member != "ensemble"]
    per_task = seeds.groupby(["task", "strategy"], sort=False).test_top1.agg(["mean", "max", "count"])
    per_task.columns = ["seed_mean", "seed_best", "seeds"]
    ensemble = members[members.member == "ensemble"].set_index(["task", "strategy"]).test_top1
    per_task = per_task.join(ensemble.rename("ensemble")).reset_index()
    overall = per_task.groupby("strategy", sort=False)[["seed_mean", "seed_best", "ensemble", "seeds"]].mean()
    table = pd.concat([per_task, overall.reset_index().assign(task="mean")], ignore_index=True)
    table["gain"] = table.ensemble - table.seed_mean
    return table[["task", "strategy", "seeds", "seed_mean", "seed_best", "ensemble", "gain"]]


def vpt_figure15(members: pd.DataFrame, path, stamp: dict | None = None) -> pd.DataFrame:
    """The VPT paper's Figure 15: for every strategy, the ensemble of its seeds' models against the seeds' mean
    and the best seed, averaged over the tasks (bars), each task a dot on the ensemble's bar."""
    table = ensemble_summary(members)
    strategies = list(dict.fromkeys(table.strategy))
    overall = table[table.task == "mean"].set_index("strategy").reindex(strategies)
    kinds = [
        ("seed_mean", "mean of the seeds", "0.75"),
        ("seed_best", "best seed", "0.45"),
        ("ensemble", "ensemble", None),
    ]
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 * len(strategies)), 3.6))
    for i, (column, name, shade) in enumerate(kinds):
        x = np.arange(len(strategies)) + (i - 1) * width
        colors = [shade or color(s) for s in strategies]
        ax.bar(x, overall[column], width, color=colors, label=name, edgecolor="black", linewidth=0.4)
        if column == "ensemble":
            tasks = table[table.task != "mean"]
            for j, strategy in enumerate(strategies):
                values = tasks[tasks.strategy == strategy].ensemble
                ax.plot([x[j]] * len(values), values, "o", color="black", markersize=2.5)
    ax.set_xticks(range(len(strategies)), [label(s) for s in strategies])
    low, high = int(table.seeds.min()), int(table.seeds.max())
    n_tasks = table[table.task != "mean"].task.nunique()
    ax.set_ylabel(f"test top-1 (%), mean of {n_tasks} task{'s' if n_tasks > 1 else ''}")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        f"VPT Figure 15: {low if low == high else f'{low}-{high}'} seeds as an ensemble (dots: each task)"
    )
    save(fig, path, stamp=stamp)
    return table


def method_overview(runs: pd.DataFrame, strategies: list[str], reference: str = "full") -> pd.DataFrame:
    """Per strategy and task: the mean test top-1 over seeds and its difference to `reference` (full
    finetuning); the tasks of every family the runs hold (the VPT paper's 24: FGVC and VTAB-1k)."""
    means = runs[runs.strategy.isin(strategies)].groupby(["task", "strategy"]).test_top1.mean().unstack()
    missing = [s for s in strategies if s not in means.columns]
    if missing or reference not in means.columns:
        raise ValueError(f"Figure 1(c): no runs of {missing or [reference]}")
    means = means.dropna(subset=[reference])
    long = means[strategies].stack().rename("top1").reset_index()
    long["vs_" + reference] = long.top1 - long.task.map(means[reference])
    long["group"] = long.task.map(lambda t: task_registry.get_task(t).group)
    return long


def vpt_figure1(runs: pd.DataFrame, strategies: list[str], path, stamp: dict | None = None) -> pd.DataFrame:
    """The VPT paper's Figure 1(c): every strategy's test top-1 minus full finetuning's on each task (a dot per
    task, coloured by group) with its mean (diamond) and the box of the spread over tasks; returns the summary:
    mean, std, min, max of that difference and the tasks won."""
    per_task = method_overview(runs, strategies)
    shown = [s for s in strategies if s != "full"]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(shown) + 2), 3.8))
    groups = list(dict.fromkeys(per_task.sort_values("group").group))
    palette = dict(zip(groups, plt.get_cmap("Set2").colors))
    for i, strategy in enumerate(shown):
        sub = per_task[per_task.strategy == strategy]
        ax.boxplot(sub.vs_full, positions=[i], widths=0.5, showfliers=False, medianprops={"color": "0.4"})
        jitter = np.linspace(-0.15, 0.15, len(sub)) if len(sub) > 1 else [0.0]
        ax.scatter(i + np.asarray(jitter), sub.vs_full, s=12, c=[palette[g] for g in sub.group], zorder=3)
        ax.scatter(
            [i], [sub.vs_full.mean()], marker="D", s=40, color=color(strategy), edgecolor="black", zorder=4
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(shown)), [label(s) for s in shown], rotation=20, ha="right")
    n_tasks = per_task.task.nunique()
    ax.set_ylabel(f"test top-1 minus full finetuning's (points), {n_tasks} tasks")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=palette[g], label=g) for g in groups]
    handles.append(
        plt.Line2D([], [], marker="D", linestyle="", color="0.5", markeredgecolor="black", label="mean")
    )
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("VPT Figure 1(c): each method against full finetuning, task by task")
    save(fig, path, stamp=stamp)
    summary = per_task.groupby("strategy", sort=False).agg(
        tasks=("task", "nunique"),
        mean_top1=("top1", "mean"),
        mean_vs_full=("vs_full", "mean"),
        std_vs_full=("vs_full", "std"),
        min_vs_full=("vs_full", "min"),
        max_vs_full=("vs_full", "max"),
        wins_vs_full=("vs_full", lambda d: int((d > 0).sum())),
    )
    return summary.reindex(strategies).reset_index()


def task_examples(examples: dict, paths, stamp: dict | None = None) -> pd.DataFrame:
    """Han et al.'s Figure 19 / the VPT paper's Figure 10: a row of example train images per task (its group
    beside its name, each image titled by its class); written to every path in `paths`. Returns what it shows."""
    images, captions = examples["images"], examples["captions"]
    n_tasks, per_task = images.shape[:2]
    fig, axes = plt.subplots(n_tasks, per_task, figsize=(1.25 * per_task + 1.6, 1.3 * n_tasks), squeeze=False)
    for row in range(n_tasks):
        for col in range(per_task):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if examples["labels"][row, col] >= 0:
                ax.imshow(images[row, col].transpose(1, 2, 0))
                ax.set_title(str(captions[row, col])[:18], fontsize=6, pad=2)
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(
            f"{examples['tasks'][row]}\n({examples['groups'][row]})",
            fontsize=7,
            rotation=0,
            ha="right",
            va="center",
        )
    fig.suptitle("Example train images of each task", fontsize=10)
    save(fig, paths[0], stamp=stamp)
    for path in paths[1:]:  # the same figure under the other paper's number
        with atomic_path(path) as tmp:
            shutil.copyfile(paths[0], tmp)
    return pd.DataFrame(
        [
            {"task": examples["tasks"][r], "group": examples["groups"][r], "class": captions[r, c]}
            for r in range(n_tasks)
            for c in range(per_task)
            if examples["labels"][r, c] >= 0
        ]
    )


def tsne_panels(maps: dict, title: str, path, stamp: dict | None = None) -> pd.DataFrame:
    """The VPT paper's Figures 9 / 21: a row per task, a panel per strategy, the t-SNE map of the feature its
    head reads on the task's sampled test images, coloured by true class; each panel titled with the strategy's
    top-1 on those images. `maps`: task -> the tsne job's arrays. Returns (task, strategy, images, top1)."""
    tasks = list(maps)
    strategies = [str(s) for s in maps[tasks[0]]["strategies"]]
    fig, axes = plt.subplots(
        len(tasks), len(strategies), figsize=(2.6 * len(strategies), 2.6 * len(tasks)), squeeze=False
    )
    rows = []
    for r, task in enumerate(tasks):
        arrays = maps[task]
        labels = arrays["labels"]
        n_classes = max(int(labels.max()) + 1, 1)
        cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20" if n_classes <= 20 else "turbo")
        for c, strategy in enumerate(strategies):
            ax = axes[r][c]
            xy, top1 = arrays[f"emb_{strategy}"], float(arrays[f"top1_{strategy}"])
            ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=0, vmax=n_classes - 1, s=3, linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label(strategy)}: {top1:.1f} %", fontsize=8)
            rows.append({"task": task, "strategy": strategy, "images": len(labels), "top1": top1})
        axes[r][0].set_ylabel(f"{task}\n({task_registry.get_task(task).group})", fontsize=8)
    n = len(maps[tasks[0]]["labels"])
    fig.suptitle(f"{title}: t-SNE of the feature the head reads, {n} test images per task, coloured by class")
    save(fig, path, stamp=stamp)
    return pd.DataFrame(rows)


COST_PANELS = [
    ("train_ms_per_image", "train ms / image"),
    ("test_ms_per_image", "test ms / image"),
    ("train_peak_mb", "train peak memory (MB)"),
    ("test_peak_mb", "test peak memory (MB)"),
]


def _cost_panel(
    ax, table: pd.DataFrame, column: str, ylabel: str, prompted: list[str], flat: list[str]
) -> None:
    """One measure against the prompt length: a line per prompt method, a dashed level per other strategy."""
    for strategy in prompted:
        line = table[table.strategy == strategy].sort_values("prompt_length")
        ax.plot(
            line.prompt_length, line[column], "-o", markersize=4, color=color(strategy), label=label(strategy)
        )
    for strategy in flat:
        value = table[table.strategy == strategy][column].iloc[0]
        ax.axhline(value, linestyle="--", linewidth=1, color=color(strategy), label=label(strategy))
    ax.set_xscale("log")
    lengths = sorted(table.prompt_length.dropna().unique())
    ax.set_xticks(lengths, [str(int(p)) for p in lengths])
    ax.minorticks_off()
    ax.set_xlabel("prompt length")
    ax.set_ylabel(ylabel)


def cost_figures(table: pd.DataFrame, figure18, figure19, stamp: dict | None = None) -> None:
    """The VPT paper's Figure 18 (train and test latency and peak memory of every measured strategy against the
    prompt length: lines for prompt methods, levels for the others) and Figure 19 (the prompt methods at
    inference: test latency and forward GFLOPs, VPT-deep against VPT-prefix)."""
    prompted = list(dict.fromkeys(table[table.prompt_length.notna()].strategy))
    flat = [s for s in dict.fromkeys(table.strategy) if s not in prompted]
    device, measure = table.device.iloc[0], table.memory_measure.iloc[0]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for ax, (column, ylabel) in zip(axes.flat, COST_PANELS):
        _cost_panel(ax, table, column, ylabel, prompted, flat)
    handles, labels = axes[0][-1].get_legend_handles_labels()  # the mean panel: every strategy's line
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(
        f"VPT Figure 18: cost per strategy on {device} (batch {int(table.batch_size.iloc[0])}; memory: {measure})"
    )
    save(fig, figure18, legend_below=True, stamp=stamp)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    _cost_panel(axes[0][0], table, "test_ms_per_image", "test ms / image", prompted, [])
    _cost_panel(axes[0][1], table, "gflops_per_image", "forward GFLOPs / image", prompted, [])
    axes[0][1].legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"VPT Figure 19: prompt methods at inference on {device}")
    save(fig, figure19, stamp=stamp)


def clip_fewshot_means(table: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Adapt Table 1's rows as (shots, selection, strategy, task, top1, tuned_pct), with a `mean` task: the mean
    over `tasks` - what Adapt's Figure 1 in this workflow draws."""
    long = table.melt(
        id_vars=["shots", "selection", "strategy", "tuned_pct"],
        value_vars=tasks,
        var_name="task",
        value_name="top1",
    )
    mean = long.groupby(["shots", "selection", "strategy"], sort=False, as_index=False).agg(
        top1=("top1", lambda x: x.mean(skipna=False)), tuned_pct=("tuned_pct", "first")
    )  # a setting missing a task has no mean (not the mean of the others)
    out = pd.concat([long, mean.assign(task="mean")], ignore_index=True)
    return out[["shots", "selection", "strategy", "task", "top1", "tuned_pct"]]


def adapt_figure1(table: pd.DataFrame, tasks: list[str], path, stamp: dict | None = None) -> pd.DataFrame:
    """Adapt's Figure 1 as this workflow draws it from its Table 1 (few-shot CLIP): test top-1 against the shots
    per class, a line per strategy (tuned % in the legend), a panel per task and one for their mean; solid the
    random draws' mean, dotted the prototype selection where the table has it."""
    means = clip_fewshot_means(table, tasks)
    strategies = list(dict.fromkeys(table.strategy))
    panels = [*tasks, "mean"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], panels):
        for strategy in strategies:
            for selection, style in (("random", "-"), ("prototype", ":")):
                rows = means[
                    (means.task == task) & (means.strategy == strategy) & (means.selection == selection)
                ]
                if rows.empty:
                    continue
                rows = rows.sort_values("shots")
                tuned = rows.tuned_pct.iloc[0]
                shown = selection == "random" or "random" not in set(means.selection)
                name = f"{label(strategy)} ({tuned:.2g} % tuned)" if shown else None
                ax.plot(
                    rows.shots, rows.top1, style, marker="o", markersize=3, color=color(strategy), label=name
                )
        ax.set_xscale("log", base=2)
        shots = sorted(means.shots.unique())
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.set_title(task if task != "mean" else f"mean of {len(tasks)} tasks", fontsize=9)
        ax.set_xlabel("shots per class", fontsize=8)
    axes[0][0].set_ylabel("test top-1 %", fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()  # the mean panel: every strategy's line
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(
        "Adapt Figure 1: few-shot top-1 by shots per class (solid: random draws' mean; dotted: prototype selection)",
        fontsize=9,
    )
    save(fig, path, legend_below=True, stamp=stamp)
    return means
