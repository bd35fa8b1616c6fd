"""Packaging: parsing the workflow imports no training or TensorFlow stack, and each rule's conda env installs the
pyproject extras that hold what the rule's code imports. The imports are read from the source (ast), not run."""

import ast
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SRC = Path(ROOT, "src")
HEAVY = {"torch", "timm", "tensorflow", "tensorflow_datasets"}
DRY_RUNS = {"default": [], "paper_table2": ["results/table2.csv", "--configfile=config/paper.yaml"]}


@pytest.mark.parametrize("args", DRY_RUNS.values(), ids=DRY_RUNS)
def test_parsing_the_workflow_imports_no_torch_timm_or_tensorflow(args):
    """Snakemake validates the config and builds the DAG in its own process: that must stay cheap."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", *args, "-n", "-c1", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    assert {"vptft.config", "vptft.tasks.vtab"} <= imported  # the Snakefile's own imports were timed
    heavy = {name.split(".")[0] for name in imported} & HEAVY
    assert not heavy, f"parsing the workflow imported {heavy}"


# ---------------------------------------------------------------------- what each rule's code imports
@dataclass(frozen=True)
class Runs:
    """What a rule runs: `python -m vptft <verb>` (the cli.py functions it calls) or a papermill notebook."""

    extras: frozenset  # the extras its env installs
    verb: str | None = None
    functions: tuple = ()
    notebook: str | None = None


def runs(extras, verb=None, functions=(), notebook=None):
    return Runs(frozenset(extras), verb, tuple(functions) or ((f"cmd_{verb}",) if verb else ()), notebook)


RULES = {
    "download": runs({"data"}, "download"),
    "splits": runs({"data"}, "splits"),
    # the prototype few-shot selection ranks records by the backbone's features
    "prototype_splits": runs({"train"}, "splits", ("cmd_splits", "_pool_features")),
    "pretrain": runs({"train"}, "pretrain"),
    "sweep": runs({"train"}, "sweep"),
    "select": runs({"train"}, "select"),
    "stage1": runs({"train"}, "stage1"),
    "train": runs({"train"}, "train"),
    "train_seed": runs({"train"}, "train"),  # one seed of a final run too long for one job
    "train_claims": runs({"train"}, "train"),  # the FT / VPT final runs with the claims' seeds
    "train_extra_backbones": runs({"train"}, "train"),  # FT / VPT on the extra backbones, train.seeds
    "fid": runs({"train"}, "fid"),
    # explains tuned models and reads the runs tables (pandas) to see which strategy won the task
    "attribution": runs({"train", "report"}, "attribution"),
    "ensemble": runs({"train", "report"}, "ensemble"),  # rebuilds tuned models, writes a CSV (pandas)
    "examples": runs({"train", "report"}, "examples"),  # decodes records (the analysis env)
    "tsne": runs({"train", "report"}, "tsne"),  # tuned models' features, scikit-learn's t-SNE
    "latency": runs({"train", "report"}, "latency"),  # builds and times models, writes a CSV (pandas)
    "collect": runs({"report"}, "collect"),
    "collect_family": runs({"report"}, "concat"),
    "table": runs({"report"}, notebook="vtab_table.ipynb"),
    "figure_fid": runs({"report"}, notebook="fid.ipynb"),
    "figure_scaling": runs({"report"}, notebook="scaling.ipynb"),
    "figure_fraction": runs({"report"}, notebook="fraction.ipynb"),
    "figure_model_scale": runs({"report"}, notebook="model_scale.ipynb"),
    "figure_curves": runs({"report"}, notebook="curves.ipynb"),
    "figure_attribution": runs({"report"}, notebook="attribution.ipynb"),
    "claims": runs({"report"}, notebook="claims.ipynb"),
    "ablation": runs({"report"}, notebook="ablation.ipynb"),  # ablation_<name>: a row per `figures` entry
    "figure_hparams": runs({"report"}, notebook="hparams.ipynb"),
    "significance": runs({"report"}, notebook="significance.ipynb"),
    "figure_pruning": runs({"report"}, notebook="pruning.ipynb"),
    "figure_clip_fewshot": runs({"report"}, notebook="clip_fewshot.ipynb"),
    "figure_ensemble": runs({"report"}, notebook="ensemble.ipynb"),
    "figure_overview": runs({"report"}, notebook="overview.ipynb"),
    "figure_examples": runs({"report"}, notebook="examples.ipynb"),
    "cost_table": runs({"report"}, notebook="cost.ipynb"),
    "figure_tsne": runs({"report"}, notebook="tsne.ipynb"),  # figure_tsne_<name>: VPT Figures 9 and 21
    "paper_name": runs({"report"}),  # cp
    "paper_name_note": runs({"report"}),  # echo
}
TRAINS = {"train", "train_seed", "train_claims", "train_extra_backbones"}
READS_RECORDS = {
    "splits",
    "prototype_splits",
    "sweep",
    "stage1",
    *TRAINS,
    "fid",
    "attribution",
    "ensemble",
    "examples",
}
BUILDS_TUNED_MODELS = {"sweep", "stage1", *TRAINS, "attribution", "ensemble", "tsne", "latency"}
# Modules every stage imports (the task and strategy registries) hold loaders only some rules call: the imports
# inside these functions (and classes) count for those rules only.
CALLED_BY = {
    ("vptft.tasks.mini", "_Canvas.draw"): {"download"},  # scipy: renders the sketch-style tasks
    ("vptft.tasks.mini", "_digits"): {"download"},  # scikit-learn's digits, resized with PIL
    ("vptft.tasks.tfds_prepare", "tfds_builder"): {"download"},  # through vtab._builder
    ("vptft.tasks.vtab", "prepare"): {"download"},  # TFDS download_and_prepare under a file lock
    ("vptft.tasks.vtab", "data_source"): READS_RECORDS,  # tfds.data_source
    (
        "vptft.tasks",
        "decode_files",
    ): READS_RECORDS,  # NABirds' / FGVC-Aircraft's image files, decoded with PIL
    ("vptft.tasks.tfds_prepare", "explain_failure"): {"download"},
    ("vptft.tasks.tfds_prepare", "_RecordingDownloads"): set(),  # the data-plan verb, run by no rule
    ("vptft.strategies", "StrategySpec.build"): BUILDS_TUNED_MODELS,
    ("vptft.provenance", "read"): set(),  # PIL for a figure's stamp: the Snakefile, when an alias is foreign
    # a job forked by the worker runs its verb, whose imports count for its own rule (not for the Snakefile,
    # which imports vptft.worker to start one)
    ("vptft.worker", "_run_child"): set(),
}
# Where a strategy's builder module is imported by name (importlib), to build a tuned model.
BUILDER_IMPORTS = {("vptft.strategies", "StrategySpec.build")}
# import name -> distribution, where they differ
DISTRIBUTION = {
    "open_clip": "open-clip-torch",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "tensorflow": "tensorflow-cpu",
    "IPython": "ipykernel",  # the kernel papermill starts brings IPython
    # TFDS depends on it; vptft imports it only to recognise TFDS's own download errors
    "requests": "tensorflow-datasets",
}
WORKFLOW = {"snakemake", "snakemake-executor-plugin-slurm"}  # run the rules, imported by no rule's code


def _normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _project():
    return tomllib.loads(Path(ROOT, "pyproject.toml").read_text())["project"]


def _names(requirements):
    return {_normalized(re.match(r"[A-Za-z0-9_.\-]+", r).group()) for r in requirements}


STAGE_EXTRAS = {
    name: _names(reqs)
    for name, reqs in _project()["optional-dependencies"].items()
    if name not in ("all", "test")
}
CORE = _names(_project()["dependencies"])


def _module_path(name):
    path = SRC.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _as_module(dotted):
    """'vptft.tasks.mini' -> itself; 'vptft.io.write_json' (a name in a module) -> 'vptft.io'."""
    while not _module_path(dotted).exists():
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def _scoped_imports(tree, scope=""):
    """(scope, dotted name) of each import; scope: the enclosing classes and functions ('' at module level)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _scoped_imports(node, f"{scope}.{node.name}".lstrip("."))
            continue
        if isinstance(node, ast.Import):
            yield from ((scope, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.level == 0, "relative import"
            yield from ((scope, f"{node.module}.{alias.name}") for alias in node.names)
        yield from _scoped_imports(node, scope)


def _builder_modules():
    from vptft.strategies import STRATEGIES  # torch-free registry

    return {spec.builder.split(":")[0] for spec in STRATEGIES.values()}


def _skipped(module, scope, rule):
    """Whether an import inside `scope` of `module` is in a function (or class) the rule never calls."""
    parts = scope.split(".") if scope else []
    enclosing = [(module, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return any(key in CALLED_BY and rule not in CALLED_BY[key] for key in enclosing)


def _imports_of(module, rule):
    imports = [
        name
        for scope, name in _scoped_imports(ast.parse(_module_path(module).read_text()))
        if not _skipped(module, scope, rule)
    ]
    for owner, scope in BUILDER_IMPORTS:
        if owner == module and not _skipped(module, scope, rule):
            imports += sorted(_builder_modules())
    return imports


def _third_party(names, rule):
    """Distributions the given imports need, following vptft's own modules (and their packages) through."""
    dists, seen, todo = set(), set(), list(names)
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top == "vptft":
            module = _as_module(name)
            for package in [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)]:
                if package not in seen:
                    seen.add(package)
                    todo += _imports_of(package, rule)
        elif top not in sys.stdlib_module_names:
            dists.add(_normalized(DISTRIBUTION.get(top, top)))
    return dists


def _cli_imports(functions):
    tree = ast.parse(Path(SRC, "vptft", "cli.py").read_text())
    return [name for scope, name in _scoped_imports(tree) if not scope or scope.split(".")[0] in functions]


def _notebook_imports(notebook):
    cells = json.loads(Path(ROOT, "notebooks", notebook).read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return [name for _, name in _scoped_imports(ast.parse(code))]


def _rules():
    """{rule: (its body, the extras its conda env installs)} from rules/*.smk."""
    found = {}
    for smk in Path(ROOT, "rules").glob("*.smk"):
        for name, body in re.findall(
            r"^(?:local)?rule (\w+):\n((?:    .*\n|\n)*)", smk.read_text(), re.MULTILINE
        ):
            env = yaml.safe_load((smk.parent / re.search(r'conda:\n\s+"([^"]+)"', body).group(1)).read_text())
            pip = [item for d in env["dependencies"] if isinstance(d, dict) for item in d.get("pip", [])]
            extras = [
                set(m.group(1).split(","))
                for m in map(re.compile(r"-e \.\.\[([a-z,]+)\]").fullmatch, pip)
                if m
            ]
            assert len(extras) == 1, f"rule {name}: its env installs vptft {len(extras)} times"
            found[name] = body, extras[0]
    for smk in Path(ROOT, "rules").glob("*.smk"):  # `use rule A as B with:` runs A's command in A's env
        for parent, name in re.findall(r"^\s*use rule (\w+) as (\w+) with:", smk.read_text(), re.MULTILINE):
            found[name] = found[parent]
    # the rendered outputs: a rule per row of rules/outputs.smk's table, all from one rule in rules/report.smk
    template = re.search(
        r"^for rendered in RENDERED:\n\n    rule:\n((?:        .*\n|\n)*)",
        Path(ROOT, "rules", "report.smk").read_text(),
        re.MULTILINE,
    ).group(1)
    template = "\n".join(line[4:] for line in template.splitlines()) + "\n"
    env = yaml.safe_load(
        Path(ROOT, "rules", re.search(r'conda:\n\s+"([^"]+)"', template).group(1)).read_text()
    )
    pip = [item for d in env["dependencies"] if isinstance(d, dict) for item in d.get("pip", [])]
    [extras] = [
        set(m.group(1).split(",")) for m in map(re.compile(r"-e \.\.\[([a-z,]+)\]").fullmatch, pip) if m
    ]
    rows = re.findall(
        r'^    Rendered\(\n\s+"(\w+)",\n[^\n]+\n\s+"([\w.]+)",',
        Path(ROOT, "rules", "outputs.smk").read_text(),
        re.MULTILINE,
    )
    assert rows, "no rows found in rules/outputs.smk"
    rows += re.findall(  # the rows made from the config's `figures` (rule ablation_<name>): one notebook
        r'^    return Rendered\(\n\s+f"(\w+)_\{name\}",\n[^\n]+\n\s+"([\w.]+)",',
        Path(ROOT, "rules", "outputs.smk").read_text(),
        re.MULTILINE,
    )
    for name, notebook in rows:
        found[name] = template.replace("rendered.notebook", f'"{notebook}"'), extras
    return found


RULE_TEXTS = _rules()


def _needs(rule):
    """Distributions the code of a rule imports, plus the tools its command runs."""
    body, what = RULE_TEXTS[rule][0], RULES[rule]
    if what.notebook:
        return _third_party(_notebook_imports(what.notebook), rule) | {"papermill", "ipykernel"}  # its kernel
    names = _cli_imports(what.functions + (("_pin_torch",) if "--threads" in body else ()))  # torch threads
    if rule == "download":  # what preparing TFDS builders imports, as the download job checks for it
        from vptft.tasks.tfds_prepare import NEEDS_MODULES

        names += ["tensorflow", "importlib_resources", *{m for ms in NEEDS_MODULES.values() for m in ms}]
    return _third_party(names, rule) if what.verb else set()


def test_the_table_says_what_each_rule_runs_and_which_extras_its_env_installs():
    assert set(RULE_TEXTS) == set(RULES)
    for rule, (body, extras) in RULE_TEXTS.items():
        what = RULES[rule]
        assert extras == what.extras, f"rule {rule}: its env installs {extras}, not {set(what.extras)}"
        verb = re.search(r"python -m vptft ([\w-]+)", body)
        assert (verb and verb.group(1)) == what.verb, rule
        notebook = re.search(r'notebook=os\.path\.join\(NOTEBOOKS, "([\w.]+)"\)', body)
        assert (notebook and "papermill {input.notebook" in body and notebook.group(1)) == what.notebook, rule


@pytest.mark.parametrize("rule", RULES)
def test_a_rules_env_holds_what_its_code_imports(rule):
    extras = RULE_TEXTS[rule][1]
    missing = _needs(rule) - CORE.union(*(STAGE_EXTRAS[e] for e in extras))
    assert not missing, f"rule {rule} imports {missing}, which its env's extras {extras} lack"


def test_each_extra_holds_only_what_the_rules_installing_it_import():
    for extra, dists in STAGE_EXTRAS.items():
        needed = set().union(*(_needs(rule) for rule in RULES if extra in RULES[rule].extras))
        assert dists <= needed, f"extra {extra!r}: none of its rules import {dists - needed}"


def test_core_dependencies_are_what_parsing_the_workflow_imports():
    common = Path(ROOT, "rules", "common.smk").read_text()
    header = "\n".join(line for line in common.splitlines() if line.startswith(("import ", "from ")))
    snakefile = _third_party([name for _, name in _scoped_imports(ast.parse(header))], "Snakefile")
    assert snakefile and not snakefile & {_normalized(DISTRIBUTION.get(m, m)) for m in HEAVY}
    assert CORE == snakefile | WORKFLOW
    assert not _third_party(_cli_imports(()), "cli")  # `python -m vptft` before a verb runs: stdlib only


def test_all_extra_is_every_stage_extra():
    [requirement] = _project()["optional-dependencies"]["all"]
    name, extras = re.fullmatch(r"(\w+)\[([a-z,]+)\]", requirement).groups()
    assert name == _project()["name"] and set(extras.split(",")) == set(STAGE_EXTRAS)


def test_called_by_table_names_functions_that_import_something():
    for module, scope in CALLED_BY:
        scopes = {s for s, _ in _scoped_imports(ast.parse(_module_path(module).read_text()))}
        inside = (
            any(s == scope or s.startswith(scope + ".") for s in scopes) or (module, scope) in BUILDER_IMPORTS
        )
        assert inside, f"{module}: no imports inside {scope}"
