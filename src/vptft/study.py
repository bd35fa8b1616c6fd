"""Which runs the configured outputs need: per regime family, the tasks and the strategies trained on them.

A family (vtab1k, scaling, fewshot) trains its `tasks` x `strategies`; a table of that family may name other
tasks or strategies, which are then trained for it too (e.g. Table 20's LoRA rows on one task). Everything here
reads only the validated config, so the Snakefile can plan the DAG without importing torch.
"""

from __future__ import annotations

import copy

from vptft import tasks as task_registry
from vptft.backbones import BACKBONES
from vptft.schedule import family_train
from vptft.splits import FAMILIES, FGVC_FAMILIES, family_of, family_regimes
from vptft.strategies import get_strategy, variant_problems
from vptft.tasks import FGVC_GROUP

CURVE_STRATEGIES = ("full", "vpt_deep", "mixed", "ft_then_pt")  # Figures 5, 9-12: the study's four rows
CLAIM_STRATEGIES = ("full", "vpt_deep")  # whose final runs (every family) the claims' seed tests read


def final_seeds(config: dict, strategy: str, backbone: str | None = None) -> list[int]:
    """The seeds of a strategy's final runs on a backbone (default: the config's `backbone`, which a backbone
    view sets to its own): `analyses.claims.seeds` for the runs the claims read (FT and VPT on the main
    backbone, every family), where set; `train.seeds` otherwise - the extra backbones' tables state no claim."""
    claims = (config.get("analyses") or {}).get("claims") or {}
    backbone = config["backbone"] if backbone is None else backbone
    main = backbone not in (config.get("backbones") or {})
    if claims.get("seeds") and strategy in CLAIM_STRATEGIES and main:
        return list(claims["seeds"])
    return list(config["train"]["seeds"])


def regime_train(config: dict, regime: str) -> dict:
    """The `train` settings a regime's runs use: the config's, with its family's own schedule where set."""
    return family_train(config["train"], config["regimes"].get(family_of(regime)))


def in_family(task: str, family: str) -> bool:
    """Fine-grained (FGVC) tasks train in the fgvc families only, CoOp's data sets in the coop family only, every
    other task in the VTAB ones."""
    known = task_registry.TASKS.get(task)  # unknown names are reported by the config check
    if known is None:
        return False
    coop = known.group == task_registry.COOP_GROUP
    if coop or family == "coop":
        return coop and family == "coop"
    return known.fine_grained == (family in FGVC_FAMILIES)


def vtab_tasks(config: dict) -> list[str]:
    """The configured tasks of the VTAB families (every task but the fine-grained and CoOp ones)."""
    return [t for t in config["tasks"] if in_family(t, "vtab1k")]


def family_tasks(config: dict, family: str) -> list[str]:
    entry = config["regimes"].get(family) or {}
    chosen = entry.get("tasks")
    return [t for t in config["tasks"] if in_family(t, family) and (chosen is None or t in chosen)]


def family_strategies(config: dict, family: str) -> list[str]:
    entry = config["regimes"].get(family) or {}
    if family == "vtab1k":
        chosen = entry.get("strategies")
        return list(config["strategies"]) if chosen is None else list(chosen)
    if family == "coop":  # CoOp's data sets train what their tables name (CLIP's rows), nothing by default
        return list(entry.get("strategies") or [])
    return list(entry.get("strategies") or ["full", "vpt_deep"])


def table_task_families(config: dict, table: str) -> dict[str, list[str]]:
    """The regime family whose runs each of a table's tasks shows: the table's own; a vtab1k table with the fgvc
    group (the VPT paper's Table 1 and its FGVC column) takes its fine-grained tasks from the fgvc family."""
    entry = output_entry(config, table)
    families = [entry["regime"]]
    if entry["regime"] == "vtab1k" and FGVC_GROUP in entry["groups"]:
        families.append("fgvc")
    chosen = entry.get("tasks")
    out = {}
    for family in families:
        pool = (
            family_tasks(config, family)
            if chosen is None
            else [t for t in config["tasks"] if t in chosen and in_family(t, family)]
        )
        known = task_registry.TASKS  # unknown names are reported by the config check, not here
        out[family] = [t for t in pool if known[t].group in entry["groups"]]
    return out


def table_tasks(config: dict, table: str) -> list[str]:
    return [t for tasks in table_task_families(config, table).values() for t in tasks]


def table_strategies(config: dict, table: str, family: str | None = None) -> list[str]:
    """A table's rows; of those, what it shows of `family` where that is not its own regime (a vtab1k table's
    FGVC column: the rows the fgvc family trains, no more)."""
    entry = output_entry(config, table)
    rows = list(entry.get("strategies") or family_strategies(config, entry["regime"]))
    if family is None or family == entry["regime"]:
        return rows
    return [s for s in rows if s in family_strategies(config, family)]


def backbones(config: dict) -> list[str]:
    """The main backbone (every family, figure and the claims), then the extra ones (`backbones`), which train only
    what the tables naming them show."""
    return [config["backbone"], *(config.get("backbones") or {})]


def backbone_view(config: dict, backbone: str) -> dict:
    """The config as the jobs of one backbone see it: `backbone` set to it; for an extra backbone with
    `schedule: paper`, the VPT paper's schedule for it (the registry's epochs, its Table 8 batch sizes by
    each strategy's column, its prompt-length grid where it has one). Sweeps, chunking and cost read this."""
    view = {**config, "backbone": backbone}
    extra = (config.get("backbones") or {}).get(backbone)
    if not extra or extra.get("schedule") != "paper":
        return view
    registry = BACKBONES[backbone]
    view["train"] = {**config["train"], "epochs": registry.epochs}
    view["strategies"] = copy.deepcopy(config["strategies"])
    for name, entry in view["strategies"].items():
        entry.update(get_strategy(name).table8_batches(registry.batches))
        if registry.prompt_lengths and "prompt_length" in entry.get("grid", {}):
            entry["grid"]["prompt_length"] = list(registry.prompt_lengths)
    return view


def pretrain_config(config: dict, backbone: str) -> dict | None:
    """The `pretrain` section as one backbone's pretrain job reads it: its own values
    (`backbones.<key>.pretrain`) over the shared ones."""
    if "pretrain" not in config:
        return None
    own = ((config.get("backbones") or {}).get(backbone) or {}).get("pretrain") or {}
    return {**config["pretrain"], **own}


MODEL_SCALE = "vpt_figure4"  # the VPT paper's Figure 4: its runs are configured in `analyses.model_scale`


def output_entry(config: dict, name: str) -> dict:
    """What an output that shows runs (a table, or the model-scale figure) asks for: regime family, groups,
    tasks, strategies, backbone(s)."""
    if name == MODEL_SCALE:
        scale = (config.get("analyses") or {}).get("model_scale") or {}
        return {
            "regime": "vtab1k",
            "groups": list(scale.get("groups") or ["natural", "specialized", "structured"]),
            "tasks": scale.get("tasks"),
            "strategies": scale.get("strategies"),
            "backbone": scale.get("backbones"),
        }
    return (config.get("figures") or {}).get(name) or config["tables"][name]


# The figures rendered from the runs of their own rule's inputs (rules/outputs.smk): a `figures` entry of the
# config may not take their names.
SIGNIFICANCE_TABLE = "vpt_table10"  # the VPT paper's Table 10 (with its Figure 16): VPT-deep vs each strategy
HPARAMS_FIGURE = "vpt_figure17"  # the VPT paper's Figure 17: `analyses.hparams`
PRUNING_FIGURE = "adapt_figure3"  # Adapt's Figure 3: `analyses.pruning`
CLIP_FIGURE = "adapt_figure1"  # Adapt's Figure 1: few-shot top-1 by shots, drawn from `tables.adapt_table1`
CLIP_TABLE = "adapt_table1"
ENSEMBLE_FIGURE = "vpt_figure15"  # the VPT paper's Figure 15: `analyses.ensemble`
COST_TABLE = "vpt_table12"  # the VPT paper's Table 12 (+ Figures 18-19): `analyses.cost`
TSNE_FIGURES = {
    "vpt_figure9": "tasks",
    "vpt_figure21": "more_tasks",
}  # `analyses.tsne`: the key of their tasks
OVERVIEW_FIGURE = "vpt_figure1"  # the VPT paper's Figure 1(c): every method against full finetuning per task
BUILT_IN_FIGURES = (
    "vpt_figure18",
    "vpt_figure19",
    *TSNE_FIGURES,
    OVERVIEW_FIGURE,
    ENSEMBLE_FIGURE,
    "vpt_figure3",
    "vpt_figure20",
    MODEL_SCALE,
    HPARAMS_FIGURE,
    "vpt_figure16",
    PRUNING_FIGURE,
    CLIP_FIGURE,
)


def hparams_strategies(config: dict) -> list[str]:
    """The strategies of the VPT paper's Figure 17 (`analyses.hparams`): the configured ones, or every strategy
    the vtab1k family trains."""
    return list(
        ((config.get("analyses") or {}).get("hparams") or {}).get("strategies")
        or family_strategies(config, "vtab1k")
    )


def ensemble_strategies(config: dict) -> list[str]:
    """The strategies of the VPT paper's Figure 15 (`analyses.ensemble`): the configured ones, or every vtab1k
    strategy whose final runs have two or more seeds."""
    configured = ((config.get("analyses") or {}).get("ensemble") or {}).get("strategies")
    return list(
        configured or [s for s in family_strategies(config, "vtab1k") if len(final_seeds(config, s)) > 1]
    )


def tsne_strategies(config: dict) -> list[str]:
    """The strategies of the VPT paper's Figures 9 and 21 (`analyses.tsne`): the configured ones, or every
    strategy the vtab1k family trains."""
    return list(
        ((config.get("analyses") or {}).get("tsne") or {}).get("strategies")
        or family_strategies(config, "vtab1k")
    )


def tsne_tasks(config: dict, figure: str) -> list[str]:
    """The tasks of one t-SNE figure (`analyses.tsne.tasks`: Figure 9, `more_tasks`: Figure 21)."""
    return list(((config.get("analyses") or {}).get("tsne") or {}).get(TSNE_FIGURES[figure]) or [])


def run_outputs(config: dict) -> list[str]:
    """The outputs whose rows name the runs they need: every table, every ablation figure (`figures`), and
    Figure 4 of the VPT paper if asked."""
    scale = (config.get("analyses") or {}).get("model_scale")
    return [*config["tables"], *(config.get("figures") or {}), *([MODEL_SCALE] if scale else [])]


def run_entries(config: dict) -> list[tuple[str, str, dict]]:
    """(config section, name, entry) of every table and ablation figure: what the config check reads."""
    return [
        *(("tables", name, entry) for name, entry in config["tables"].items()),
        *(("figures", name, entry) for name, entry in (config.get("figures") or {}).items()),
    ]


def table_backbones(config: dict, table: str) -> list[str]:
    """The backbones whose runs a table shows: its `backbone` (one, or a list: the VPT paper's Table 4 shows MAE
    and MoCo v3), else the main one."""
    chosen = output_entry(config, table).get("backbone")
    if not chosen:
        return [config["backbone"]]
    return [chosen] if isinstance(chosen, str) else list(chosen)


def table_backbone(config: dict, table: str) -> str:
    """The backbone a table's provenance names: its one backbone, or its backbones joined by '+'."""
    return "+".join(table_backbones(config, table))


def family_runs(config: dict, family: str, backbone: str | None = None) -> dict[str, list[str]]:
    """task -> strategies with final runs in this family on `backbone` (None: the main one): the family's own
    plus what its tables add on the main backbone; on an extra backbone, only what the tables naming it show."""
    backbone = backbone or config["backbone"]
    main = backbone == config["backbone"]
    runs = (
        {task: list(family_strategies(config, family)) for task in family_tasks(config, family)}
        if main
        else {}
    )
    for table in run_outputs(config):
        if backbone not in table_backbones(config, table):
            continue
        for task in table_task_families(config, table).get(family, []):
            strategies = runs.setdefault(task, [])
            strategies += [s for s in table_strategies(config, table, family) if s not in strategies]
    return {task: runs[task] for task in config["tasks"] if runs.get(task)}


def backbone_families(config: dict, backbone: str) -> list[str]:
    """The regime families with final runs on `backbone`."""
    return [family for family in configured_families(config) if family_runs(config, family, backbone)]


def family_regime_names(config: dict, family: str) -> list[str]:
    """The regimes whose runs a family's collected table holds (scaling includes the vtab1k point if asked)."""
    names = family_regimes(family, config["regimes"])
    if family == "scaling" and config["regimes"]["scaling"].get("include_vtab1k", True):
        names = ["vtab1k", *names]
    return names


def hparams_source(config: dict, regime: str) -> str:
    """Which regime's sweep selects a regime's hyper-parameters: its own, or vtab1k's (config `hparams`)."""
    family = family_of(regime)
    if family in ("vtab1k", "fgvc"):
        return regime
    home = (
        "fgvc" if family == "fraction" else "vtab1k"
    )  # the family whose selection a data-size family reuses
    return home if config["regimes"][family].get("hparams") == home else regime


def configured_families(config: dict) -> list[str]:
    return [family for family in FAMILIES if family in config["regimes"]]


def claim_families(config: dict) -> list[str]:
    """The families whose runs the claims report reads (the VTAB ones: its claims are about VTAB-1k)."""
    return [family for family in configured_families(config) if family not in (*FGVC_FAMILIES, "coop")]


def problems(config: dict) -> list[str]:
    """Names in families, tables and analyses that the config does not define, with their key paths."""
    errors = []
    strategies, tasks = set(config["strategies"]), set(config["tasks"])
    for family in configured_families(config):
        entry = config["regimes"][family]
        for key, known in (("tasks", tasks), ("strategies", strategies)):
            for i, name in enumerate(entry.get(key) or []):
                if name not in known:
                    errors.append(f"$.regimes.{family}.{key}[{i}]: {name!r} is not in the config's `{key}`")
    fewshot = config["regimes"].get("fewshot")
    if fewshot is not None and not fewshot.get("draws") and not fewshot.get("prototype"):
        errors.append(
            "$.regimes.fewshot: draws 0 and prototype false select no few-shot train set; set `draws` >= 1 "
            "or `prototype: true`, or remove the fewshot family"
        )
    scale = analyses_entry(config, "model_scale")
    for key, known in (("tasks", tasks), ("strategies", strategies)):
        for i, name in enumerate(scale.get(key) or []):
            if name not in known:
                errors.append(f"$.analyses.model_scale.{key}[{i}]: {name!r} is not in the config's `{key}`")
    for i, name in enumerate(scale.get("backbones") or []):
        if name not in backbones(config):
            errors.append(
                f"$.analyses.model_scale.backbones[{i}]: {name!r} is neither `backbone` nor in `backbones`; "
                "add it to `backbones`"
            )
    for section, table, entry in run_entries(config):
        where = f"$.{section}.{table}"
        if section == "tables" and table in (SIGNIFICANCE_TABLE, COST_TABLE):
            errors.append(f"{where}: {table!r} is a table the workflow makes itself; name it otherwise")
        if section == "figures" and table in BUILT_IN_FIGURES:
            errors.append(
                f"{where}: {table!r} is a figure the workflow draws itself; name the ablation otherwise"
            )
        for name in table_backbones(config, table):
            if name not in backbones(config):
                errors.append(
                    f"{where}.backbone: {name!r} is neither `backbone` nor in `backbones`; add it to `backbones`"
                )
        if entry["regime"] not in config["regimes"]:
            errors.append(f"{where}.regime: regime family {entry['regime']!r} is not configured in `regimes`")
            continue
        for key, known in (("tasks", tasks), ("strategies", strategies)):
            for i, name in enumerate(entry.get(key) or []):
                if name not in known:
                    errors.append(f"{where}.{key}[{i}]: {name!r} is not in the config's `{key}`")
        chosen = table_tasks(config, table)
        if not chosen:
            errors.append(
                f"{where}.groups: no task of this {section[:-1]}'s family is in groups {entry['groups']}"
            )
        else:
            for i, group in enumerate(entry["groups"]):
                if not any(task_registry.TASKS[t].group == group for t in chosen):
                    errors.append(
                        f"{where}.groups[{i}]: no task of group {group!r} among the {section[:-1]}'s tasks "
                        f"{chosen}; remove the group or add a {group} task to the {entry['regime']} family"
                    )
        if entry.get("metric") == "prompt_length":
            for s in table_strategies(config, table):
                if "prompt_length" not in config["strategies"].get(s, {}).get("grid", {}):
                    errors.append(f"$.tables.{table}.strategies: {s!r} has no prompt_length in its grid")
    fraction = config["regimes"].get("fraction")
    if fraction and fraction.get("hparams") == "fgvc" and "fgvc" not in config["regimes"]:
        errors.append(
            "$.regimes.fraction.hparams: 'fgvc' reuses the fgvc regime's selection, and `regimes.fgvc` is not "
            "configured; add it, or set `hparams: sweep`"
        )
    for section, table, entry in run_entries(config):
        if FGVC_GROUP in entry["groups"] and "fgvc" not in config["regimes"]:
            errors.append(
                f"$.{section}.{table}.groups: the {FGVC_GROUP!r} group shows the fgvc regime's runs; add "
                "`regimes.fgvc`"
            )
    analyses = config.get("analyses", {})
    for key in ("tasks", "quadrant_tasks"):
        for i, name in enumerate((analyses.get("attribution") or {}).get(key) or []):
            if name in tasks and not in_family(name, "vtab1k"):
                errors.append(
                    f"$.analyses.attribution.{key}[{i}]: {name!r} has no vtab1k runs (fine-grained or CoOp); it explains vtab1k runs"
                )
    for i, name in enumerate((analyses.get("curves") or {}).get("tasks") or []):
        if name in tasks and not in_family(name, "vtab1k"):
            errors.append(
                f"$.analyses.curves.tasks[{i}]: {name!r} has no vtab1k runs (fine-grained or CoOp); the curves are of vtab1k runs"
            )
    pruning = analyses.get("pruning") or {}
    if pruning:
        runs = family_runs(config, "vtab1k").get(pruning["task"], [])
        if pruning["strategy"] not in runs:
            errors.append(
                f"$.analyses.pruning: {pruning['strategy']!r} has no vtab1k runs on {pruning['task']!r} "
                f"(trained there: {runs})"
            )
        elif get_strategy(pruning["strategy"]).base != "adapt":
            errors.append(f"$.analyses.pruning.strategy: {pruning['strategy']!r} does not prune (not Adapt)")
    hparams = analyses.get("hparams") or {}
    if hparams and hparams["task"] not in family_tasks(config, "vtab1k"):
        errors.append(f"$.analyses.hparams.task: {hparams['task']!r} is not a task of the vtab1k family")
    for i, name in enumerate(hparams.get("strategies") or []):
        if name not in family_strategies(config, "vtab1k"):
            errors.append(f"$.analyses.hparams.strategies[{i}]: {name!r} has no vtab1k sweep in this config")
    for i, name in enumerate((analyses.get("cost") or {}).get("strategies") or []):
        errors += [f"$.analyses.cost.strategies[{i}]: {problem}" for problem in variant_problems(name)]
    tsne, ensemble = analyses.get("tsne") or {}, analyses.get("ensemble") or {}
    for path, analysed, settings in (
        ("tsne.tasks", tsne.get("tasks"), tsne_strategies(config)),
        ("tsne.more_tasks", tsne.get("more_tasks"), tsne_strategies(config)),
        ("ensemble.tasks", ensemble.get("tasks"), ensemble_strategies(config)),
    ):
        errors += _analysis_task_problems(config, path, analysed or [], settings)
    for name in ensemble_strategies(config) if ensemble else ():
        if len(final_seeds(config, name)) < 2:
            errors.append(
                f"$.analyses.ensemble.strategies: {name!r} has one seed ({final_seeds(config, name)}), "
                "nothing to ensemble; give train.seeds two or more"
            )
    claim_seeds = (analyses.get("claims") or {}).get("seeds")
    for name in config["strategies"]:
        known = not variant_problems(name)  # unknown names are reported by the config check
        continued = get_strategy(name).continues if known else None
        missing = sorted(set(final_seeds(config, name)) - set(claim_seeds or []))
        if claim_seeds and continued in CLAIM_STRATEGIES and name not in CLAIM_STRATEGIES and missing:
            errors.append(
                f"$.analyses.claims.seeds: {name!r} continues each seed of {continued!r}, whose final runs "
                f"use these seeds; seeds {missing} of train.seeds are not among them"
            )
    for key in ("tasks", "quadrant_tasks"):
        for i, name in enumerate(analyses.get("attribution", {}).get(key, [])):
            if name not in tasks:
                errors.append(f"$.analyses.attribution.{key}[{i}]: {name!r} is not in the config's `tasks`")
    attribution = analyses.get("attribution", {})
    missing = [s for s in ("full", "vpt_deep") if s not in family_strategies(config, "vtab1k")]
    if missing and (attribution.get("tasks") or attribution.get("quadrant_tasks")):
        errors.append(
            f"$.analyses.attribution: compares full and vpt_deep on vtab1k; {missing} not trained there"
        )
    for i, name in enumerate(analyses.get("curves", {}).get("tasks") or []):
        if name not in tasks:
            errors.append(f"$.analyses.curves.tasks[{i}]: {name!r} is not in the config's `tasks`")
    return errors


def analyses_entry(config: dict, name: str) -> dict:
    return (config.get("analyses") or {}).get(name) or {}


def compares_ft_and_vpt(config: dict) -> bool:
    """Whether full and vpt_deep both run on vtab1k: what Figure 3 and the claims report compare."""
    return {"full", "vpt_deep"} <= set(family_strategies(config, "vtab1k"))


def analysis_tasks(config: dict, name: str) -> list[str]:
    """The tasks an analysis names (empty when it names none)."""
    return list((config.get("analyses", {}).get(name) or {}).get("tasks") or [])


def curve_strategies(config: dict) -> list[str]:
    """The strategies Figures 5 and 9-12 draw curves of: the study's four rows, where they run on vtab1k."""
    trained = family_strategies(config, "vtab1k")
    return [s for s in CURVE_STRATEGIES if s in trained]


def draws_curves(config: dict, task: str, regime: str, strategy: str) -> bool:
    """Whether a figure draws this final run's per-epoch test curve: the vtab1k runs of the curve strategies
    (Figures 5, 9-12, every task) and every scaling run (Figure 6). The others need only their last epoch."""
    family = family_of(regime)
    if family == "vtab1k":
        scaling = config["regimes"].get("scaling") or {}
        in_figure6 = (
            bool(scaling)
            and scaling.get("include_vtab1k", True)
            and strategy in family_strategies(config, "scaling")
            and task in family_tasks(config, "scaling")
        )
        return strategy in curve_strategies(config) or in_figure6
    return family == "scaling" and strategy in family_strategies(config, "scaling")


def _analysis_task_problems(config: dict, path: str, tasks: list[str], strategies: list[str]) -> list[str]:
    """An analysis that rebuilds runs per task (t-SNE, ensembles): each task a vtab1k one, where each of its
    strategies has runs."""
    errors, runs = [], family_runs(config, "vtab1k")
    for i, task in enumerate(tasks):
        if task not in runs:
            errors.append(f"$.analyses.{path}[{i}]: {task!r} is not a task of the vtab1k family")
            continue
        missing = [name for name in strategies if name not in runs[task]]
        errors += [
            f"$.analyses.{path.split('.')[0]}: {name!r} has no vtab1k runs on {task!r} (trained: {runs[task]})"
            for name in missing
        ]
    return errors


def output_problem(config: dict, output: str) -> str | None:
    """Why this config cannot make an output (a table, figure or report by its name), with how to get it; None
    where it can. The rules ask before any job is scheduled, so nothing runs toward an output that would fail."""
    trained = family_strategies(config, "vtab1k")
    if output in (config.get("figures") or {}):
        return None
    if output == CLIP_FIGURE and CLIP_TABLE not in (config.get("tables") or {}):
        return (
            f"it draws `tables.{CLIP_TABLE}` (few-shot CLIP): add it, e.g. `{CLIP_TABLE}: {{regime: fewshot, "
            "groups: [natural], backbone: mini_clip, strategies: [zero_shot, coop]}}` with that backbone in "
            "`backbones`"
        )
    if output == CLIP_FIGURE and config["tables"][CLIP_TABLE].get("regime") not in ("fewshot", "coop"):
        return f"it draws top-1 by shots: `tables.{CLIP_TABLE}.regime` must be fewshot or coop"
    if output == PRUNING_FIGURE and not (config.get("analyses") or {}).get("pruning"):
        return "set `analyses.pruning.task` (a vtab1k task Adapt trains on), e.g. `analyses: {pruning: {task: <task>}}`"
    if output in TSNE_FIGURES and not tsne_tasks(config, output):
        key = TSNE_FIGURES[output]
        return f"set `analyses.tsne.{key}` (vtab1k tasks), e.g. `analyses: {{tsne: {{{key}: [<task>]}}}}`"
    if output == ENSEMBLE_FIGURE and not (config.get("analyses") or {}).get("ensemble"):
        return "set `analyses.ensemble.tasks` (vtab1k tasks), e.g. `analyses: {ensemble: {tasks: [<task>]}}`"
    if output == ENSEMBLE_FIGURE and not ensemble_strategies(config):
        return "no vtab1k strategy has two or more seeds to ensemble; give train.seeds two or more"
    if output == HPARAMS_FIGURE and not (config.get("analyses") or {}).get("hparams"):
        return "set `analyses.hparams.task` (a vtab1k task), e.g. `analyses: {hparams: {task: <task>}}`"

    if output == SIGNIFICANCE_TABLE:
        if not compares_ft_and_vpt(config):
            return f"it tests VPT-deep against the other vtab1k strategies; vtab1k trains {trained}"
        return None
    if output == COST_TABLE:
        if not (config.get("analyses") or {}).get("cost"):
            return "set `analyses.cost.strategies` (what to measure), e.g. `analyses: {cost: {strategies: [full]}}`"
        return None
    if output.startswith(("table", "vpt_table", "adapt_table")):
        if output not in config["tables"]:
            configured = ", ".join(config["tables"]) or "none"
            return (
                f"no table {output!r} in this config's `tables` (configured: {configured}); add one, e.g. "
                f"`{output}: {{regime: vtab1k, groups: [structured]}}`"
            )
        return None
    if output in ("figure3", "fid", "claims", OVERVIEW_FIGURE) and not compares_ft_and_vpt(config):
        missing = [s for s in CLAIM_STRATEGIES if s not in trained]
        return (
            f"it compares full finetuning with VPT on vtab1k, and {missing} have no vtab1k runs in this config "
            f"(vtab1k trains {trained}); add them to `strategies` and `regimes.vtab1k.strategies`"
        )
    if output in ("figure8", "figure17", "figure18"):
        attribution = (config.get("analyses") or {}).get("attribution") or {}
        if not (attribution.get("tasks") or attribution.get("quadrant_tasks")):
            return "no task to explain: set `analyses.attribution.tasks` (Figures 8, 17) and `quadrant_tasks` (18)"
        if not compares_ft_and_vpt(config):
            return f"it explains full finetuning and VPT, but vtab1k trains {trained}; add full and vpt_deep"
    if output == MODEL_SCALE and len(analyses_entry(config, "model_scale").get("backbones") or []) < 2:
        return (
            "it compares backbones of several sizes: set `analyses.model_scale.backbones` (e.g. vit_b16_in21k, "
            "vit_l16_in21k, vit_h14_in21k, each the main backbone or in `backbones`)"
        )
    if output in ("vpt_figure3", "vpt_figure20"):
        if not family_runs(config, "fraction"):
            return (
                "no train-fraction runs: add `regimes.fraction` (percent, strategies) and fine-grained tasks "
                "(e.g. cub200, or the mini finestars_src) to `tasks`"
            )
        compared = family_strategies(config, "fraction")
        if output == "vpt_figure3" and ("vpt_deep" not in compared or len(compared) < 2):
            return f"it sets vpt_deep against other strategies; `regimes.fraction.strategies` is {compared}"
    if (
        output in ("figure4", "figure6", "figure13", "figure14", "figure15", "figure16")
        and "scaling" not in config["regimes"]
    ):
        return "no data-scaling runs: add `regimes.scaling` (train sizes, tasks, strategies)"
    if output.startswith(("figure5", "figure9", "figure10", "figure11", "figure12")) and not curve_strategies(
        config
    ):
        return f"it draws the curves of {list(CURVE_STRATEGIES)} on vtab1k; vtab1k trains none of them ({trained})"
    return None
