"""Config validation: the JSON schema (defaults included) plus the checks a schema cannot express (task and
strategy names against the registries, regime sizes against what a task has). Runs in the Snakefile before any
job, so it imports neither torch nor timm. Every message names the key path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from vptft import study
from vptft import tasks as task_registry
from vptft.backbones import BACKBONES, family_problem, needs_local_file
from vptft.strategies import VARIANT, get_strategy, variant_problems

SCHEMA_PATH = Path(__file__).with_name("config_schema.yaml")


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class):
    """A validator that fills in the schema's defaults while it validates (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _inline_refs(node, defs: dict):
    """The schema with each local `$ref` replaced by its definition (siblings win), so defaults behind a
    reference are filled in like any other."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            node = {**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def load_schema() -> dict:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    return _inline_refs(schema, schema.get("$defs", {}))


def _backbone_errors(config: dict) -> list[str]:
    """Each backbone against the registry, its weights source and the `pretrain` section."""
    entries = [("$.backbone", config["backbone"], "$.backbone_checkpoint", config["backbone_checkpoint"], {})]
    for key, extra in config["backbones"].items():
        entries.append(
            (f"$.backbones.{key}", key, f"$.backbones.{key}.checkpoint", extra["checkpoint"], extra)
        )
    errors = []
    for path, key, file_path, checkpoint, extra in entries:
        spec = BACKBONES.get(key)
        if spec is None:
            errors.append(f"{path}: unknown backbone {key!r}; known: {', '.join(BACKBONES)}")
            continue
        if spec.pretrained_by_workflow and "pretrain" not in config:
            errors.append(
                f"$.pretrain: backbone {key!r} is pre-trained by the workflow and needs a `pretrain` section"
            )
        elif needs_local_file(spec) and not checkpoint:
            errors.append(
                f"{file_path}: backbone {key!r} loads from a local file; set it to the path of {spec.weights}"
            )
        if extra.get("pretrain") and not spec.pretrained_by_workflow:
            errors.append(f"{path}.pretrain: backbone {key!r} is not pre-trained by the workflow; remove it")
    if config["backbone"] in config["backbones"]:
        errors.append(f"$.backbones.{config['backbone']}: it is the main `backbone` already")
    if "pretrain" in config and not any(
        BACKBONES[key].pretrained_by_workflow for key in study.backbones(config) if key in BACKBONES
    ):
        errors.append(
            "$.pretrain: no configured backbone is pre-trained by the workflow; remove the `pretrain` section"
        )
    return errors


def _semantic_errors(config: dict) -> list[str]:
    errors = _backbone_errors(config)
    if any(key not in BACKBONES for key in study.backbones(config)):
        return errors
    bench = config["benchmark"]
    for i, name in enumerate(config["tasks"]):
        task = task_registry.TASKS.get(name)
        if task is None:
            known = ", ".join(task_registry.config_tasks(bench))
            errors.append(f"$.tasks[{i}]: unknown task {name!r}; tasks of benchmark {bench!r}: {known}")
        elif name not in task_registry.config_tasks(bench):
            errors.append(
                f"$.tasks[{i}]: task {name!r} belongs to benchmark {task.benchmark!r}, not {bench!r}"
            )
    variants = {}
    for name, entry in config["strategies"].items():
        variant = VARIANT.fullmatch(name)
        base_entry = (config["strategies"].get(variant.group(1)) if variant else None) or {}
        searched = frozenset(base_entry.get("grid") or ())
        if problems := variant_problems(name, searched):
            errors += [f"$.strategies.{name}: {problem}" for problem in problems]
            continue
        spec = get_strategy(name)
        if spec.variant:
            same = variants.setdefault((spec.base, frozenset(spec.variant)), name)
            if same != name:
                errors.append(f"$.strategies.{name}: the same variant as {same!r}; configure it once")
        for depth in sorted({BACKBONES[key].depth for key in study.backbones(config)}):
            errors += [
                e
                for e in spec.problems(f"$.strategies.{name}", entry["grid"], entry.get("options", {}), depth)
                if e not in errors
            ]
        if spec.continues and spec.continues not in config["strategies"]:
            errors.append(
                f"$.strategies.{name}: {name!r} continues the runs of {spec.continues!r}, which is not "
                "configured; add it to `strategies`"
            )
    errors += _regime_errors(config)
    errors += study.problems(config)
    return errors or _family_errors(config)  # on option values the other checks have found valid


def _family_errors(config: dict) -> list[str]:
    """Strategies (and prompt locations / poolings of their grids) with no form on a backbone that trains them:
    the main backbone trains its families' strategies and those of the tables and figures it shows, another one
    those of the tables naming it (a CLIP-only strategy configured for an extra CLIP backbone is no strategy of
    the main one)."""
    errors = []
    for key in study.backbones(config):
        trained = [
            s
            for family in study.configured_families(config)
            for strategies in study.family_runs(config, family, key).values()
            for s in strategies
        ]
        for name in dict.fromkeys(trained):
            entry = config["strategies"].get(name)
            if entry is None or variant_problems(name):  # reported by the other checks
                continue
            spec = get_strategy(name)
            settings = [spec.resolve(entry.get("options", {}))]
            for option in ("location", "pooling"):
                settings += [{**settings[0], option: v} for v in entry["grid"].get(option, [])]
            for values in settings:
                if (problem := family_problem(BACKBONES[key], spec.base, values)) is not None:
                    errors.append(f"$.strategies.{name}: {problem}; it trains on backbone {key!r}")
                    break
    return errors


def _regime_errors(config: dict) -> list[str]:
    """vtab1k sizes against what the mini tasks have (VTAB sizes are known once the data is prepared, where the
    splits rule checks them) and the scaling ratio. Scaling sizes a task lacks are capped, not refused."""
    from vptft.tasks.mini import SPLIT_SIZES

    errors = []
    regimes = config["regimes"]
    scaling = regimes.get("scaling")
    if scaling:
        for i, n in enumerate(scaling["n_train"]):
            if n % scaling["ratio"]:
                errors.append(
                    f"$.regimes.scaling.n_train[{i}]: {n} has no {scaling['ratio']}:1 train:val split "
                    f"(not a multiple of {scaling['ratio']})"
                )
    mini = [
        task_registry.TASKS[n]
        for n in config["tasks"]
        if getattr(task_registry.TASKS.get(n), "benchmark", None) == "mini"
    ]
    for task in mini:
        if "vtab1k" in regimes:
            sizes = regimes["vtab1k"]
            if sizes["n_train"] > task.val_start:
                errors.append(
                    f"$.regimes.vtab1k.n_train: {sizes['n_train']} exceeds the {task.val_start} train "
                    f"records task {task.name!r} has before its val slice"
                )
            if sizes["n_val"] > SPLIT_SIZES[task.val_split] - task.val_start:
                errors.append(
                    f"$.regimes.vtab1k.n_val: {sizes['n_val']} exceeds the "
                    f"{SPLIT_SIZES[task.val_split] - task.val_start} val records of task {task.name!r}"
                )
    return errors


def validate_config(config: dict) -> dict:
    """Fill defaults and validate in place; raise ConfigError listing every problem with its key path."""
    schema = load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = [
        f"{e.json_path}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: e.json_path)
    ]
    if not errors:
        errors = _semantic_errors(config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return config


def load_config(path) -> dict:
    with open(path) as f:
        return validate_config(yaml.safe_load(f) or {})


def backbone_weights(config: dict, key: str) -> tuple[str, str | None]:
    """(key path, local weights file or None) of a configured backbone."""
    if key == config["backbone"]:
        return "$.backbone_checkpoint", config.get("backbone_checkpoint")
    return f"$.backbones.{key}.checkpoint", config["backbones"][key].get("checkpoint")


def missing_weights(config: dict, key: str) -> str | None:
    """Why a backbone's configured local weights file cannot be read (None if it is there or none is set): asked
    while the DAG is built for the jobs that read it, so a target that needs other weights is not refused."""
    path, file = backbone_weights(config, key)
    if file and not Path(file).is_file():
        return f"{path}: {file}: no such file; backbone {key!r} needs {BACKBONES[key].weights or 'its weights file'}"
    return None


def gpus_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU, without importing torch."""
    import glob
    import shutil

    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def check_local_resources(config: dict) -> None:
    """A local (non-cluster) run must not ask for GPUs the machine does not have."""
    if gpus_visible():
        return
    errors = [
        f"$.resources.{stage}.gpu: {res['gpu']} GPU(s) per job requested, but this local run sees no GPU; "
        "set it to 0 to run on the CPU, or submit to a cluster (--profile slurm)"
        for stage, res in config["resources"].items()
        if res.get("gpu", 0) > 0
    ]
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
