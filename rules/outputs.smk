# The table of rendered outputs (figures, reports): one row each - name, notebook, files, inputs, what the notebook
# is told, when `all` builds it. rules/report.smk makes a papermill rule of every row. A new figure = a row here,
# a notebook and a caption (report/<file stem>.rst). Tables have their own rule (`table`, one for all tables).
@dataclasses.dataclass(frozen=True)
class Rendered:
    """An output a notebook renders. `files`: key -> file under results/<bench>/ (.png and .md go in the Snakemake
    report with caption report/<stem>.rst, or `captions[key]`); `inputs(wildcards)`: key -> files it reads,
    refused while the DAG is built where the config cannot make it (study.output_problem of `name`);
    `spec(input, output)`: what the notebook is told besides the provenance stamp; `when()`: whether `all`
    builds it."""

    rule_name: str
    # the executed notebook's and the log's name (results/<bench>/<name>.ipynb), and the output's name for
    # study.output_problem and the provenance stamp
    name: str
    notebook: str
    files: dict
    inputs: object
    spec: object
    when: object
    captions: dict = dataclasses.field(default_factory=dict)

    def input_files(self, wildcards):
        if problem := study.output_problem(config, self.name):
            raise ValueError(f"{RESULTS}/{next(iter(self.files.values()))}: {problem}")
        return self.inputs(wildcards)

    def output_files(self):
        files = {}
        for key, name in self.files.items():
            path = f"{RESULTS}/{name}"
            if name.endswith((".png", ".md")):
                caption = self.captions.get(key, os.path.splitext(name)[0])
                category = "Figures" if name.endswith(".png") else "Claims"
                path = report(
                    path, caption=f"../report/{caption}.rst", category=category
                )
            files[key] = path
        return files

    def params(self, wildcards, input, output):
        return spec(**self.spec(input, output), provenance=stamp_of(self.name))


def pruning_run():
    """The Adapt run whose pruning history Adapt's Figure 3 draws: the first seed on `analyses.pruning.task`."""
    entry = config["analyses"]["pruning"]
    seed = study.final_seeds(config, entry["strategy"])[0]
    return f"{runs_dir(BB)}/{entry['task']}/vtab1k/{entry['strategy']}/seed{seed}/metrics.json"


def ensemble_members():
    """The ensemble jobs of the VPT paper's Figure 15: every strategy of `analyses.ensemble` on each of its tasks."""
    return [
        f"{RESULTS}/ensemble/{task}/{strategy}.csv"
        for task in config["analyses"]["ensemble"]["tasks"]
        for strategy in study.ensemble_strategies(config)
    ]


def example_tasks():
    """The tasks of the example-images figure: every configured task the vtab1k or fgvc family trains on."""
    families = [f for f in ("vtab1k", "fgvc") if f in study.configured_families(config)]
    return [
        t
        for t in config["tasks"]
        if any(t in study.family_tasks(config, f) for f in families)
    ]


def example_manifest(task):
    family = "fgvc" if task in study.family_tasks(config, "fgvc") else "vtab1k"
    return f"{RESULTS}/splits/{task}/{family}.json"


def _tsne(name):
    """The VPT paper's Figure 9 or 21: t-SNE maps of every `analyses.tsne` strategy on the figure's tasks."""
    return Rendered(
        f"figure_tsne_{name}",
        name,
        "tsne.ipynb",
        {"figure": f"{name}.png", "csv": f"{name}.csv"},
        lambda wc: {
            "maps": expand(
                f"{RESULTS}/tsne/{{task}}.npz", task=study.tsne_tasks(config, name)
            )
        },
        lambda input, output: dict(
            maps=list(zip(study.tsne_tasks(config, name), input.maps)),  # in order
            title=f"VPT Figure {name.removeprefix('vpt_figure')}",
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: bool(study.tsne_tasks(config, name)),
        captions={"figure": "vpt_figure9"},
    )


def _family_runs(family):
    tasks, strategies = study.family_tasks(config, family), study.family_strategies(
        config, family
    )
    return lambda wc: {"runs": collected(family, tasks, strategies)}


RENDERED = [
    Rendered(
        "figure_fid",
        "figure3",
        "fid.ipynb",
        {"figure": "figure3.png", "csv": "fid.csv"},
        lambda wc: {
            "fid": expand(
                f"{RESULTS}/fid/{{task}}.json", task=study.vtab_tasks(config)
            ),
            "runs": collected("vtab1k", study.vtab_tasks(config), fid_strategies()),
        },
        lambda input, output: dict(
            fid=list(input.fid),
            runs=list(input.runs),
            figure=output.figure,
            csv=output.csv,
            benchmark=BENCH,
        ),
        lambda: study.compares_ft_and_vpt(config),  # Figure 3 compares FT with VPT
    ),
    Rendered(
        "figure_scaling",
        "figure4",
        "scaling.ipynb",
        {name: f"{name}.png" for name in SCALING_FIGURES},
        _family_runs("scaling"),
        lambda input, output: dict(
            runs=list(input.runs),
            strategies=study.family_strategies(config, "scaling"),
            curve_tasks=curve_tasks(),
            figures={name: output[name] for name in SCALING_FIGURES},
        ),
        lambda: "scaling" in study.backbone_families(config, BB),
    ),
    Rendered(
        "figure_fraction",
        "vpt_figure3",
        "fraction.ipynb",
        {"figure3": "vpt_figure3.png", "figure20": "vpt_figure20.png"},
        _family_runs("fraction"),
        lambda input, output: dict(
            runs=list(input.runs),
            strategies=study.family_strategies(config, "fraction"),
            figure3=output.figure3,
            figure20=output.figure20,
        ),
        lambda: "fraction" in study.backbone_families(config, BB)
        and not study.output_problem(config, "vpt_figure3"),
    ),
    Rendered(
        "figure_model_scale",
        study.MODEL_SCALE,
        "model_scale.ipynb",
        {"figure": "vpt_figure4.png", "csv": "vpt_figure4.csv"},
        lambda wc: {"runs": output_runs(study.MODEL_SCALE)},
        lambda input, output: dict(
            runs=list(input.runs),
            backbones=study.table_backbones(config, study.MODEL_SCALE),
            strategies=study.table_strategies(config, study.MODEL_SCALE),
            groups=study.output_entry(config, study.MODEL_SCALE)["groups"],
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: study.MODEL_SCALE in study.run_outputs(config),
    ),
    Rendered(
        "figure_hparams",
        study.HPARAMS_FIGURE,
        "hparams.ipynb",
        {"figure": "vpt_figure17.png", "csv": "vpt_figure17.csv"},
        lambda wc: {
            "sweeps": [
                f"{runs_dir(BB)}/{config['analyses']['hparams']['task']}/vtab1k/{s}/sweep.csv"
                for s in study.hparams_strategies(config)
            ]
        },
        lambda input, output: dict(
            sweeps=list(
                zip(study.hparams_strategies(config), input.sweeps)
            ),  # in order
            grids={
                s: list(config["strategies"][s]["grid"])
                for s in study.hparams_strategies(config)
            },
            task=config["analyses"]["hparams"]["task"],
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: bool(config["analyses"].get("hparams")),
    ),
    Rendered(
        "figure_curves",
        "figure5",
        "curves.ipynb",
        {name: f"{name}.png" for name in CURVE_FIGURES},
        lambda wc: {
            "runs": collected("vtab1k", study.vtab_tasks(config), curve_strategies())
        },
        lambda input, output: dict(
            runs=list(input.runs),
            tasks=curve_tasks(),
            strategies=curve_strategies(),
            figures={name: output[name] for name in CURVE_FIGURES},
        ),
        lambda: bool(curve_strategies()),
    ),
    Rendered(
        "figure_attribution",
        "figure8",
        "attribution.ipynb",
        {
            **{name: f"{name}.png" for name in ATTRIBUTION_FIGURES},
            "index": "attribution/index.csv",
        },
        lambda wc: {
            "maps": expand(
                f"{RESULTS}/attribution/{{task}}/maps.npz", task=attribution_tasks()
            )
        },
        lambda input, output: dict(
            maps=dict(zip(attribution_tasks(), input.maps)),
            tasks=config["analyses"]["attribution"]["tasks"],
            quadrant_tasks=config["analyses"]["attribution"]["quadrant_tasks"],
            figures={name: output[name] for name in ATTRIBUTION_FIGURES},
            index=output.index,
        ),
        lambda: bool(attribution_tasks()),
    ),
    Rendered(
        "significance",
        study.SIGNIFICANCE_TABLE,
        "significance.ipynb",
        {"table": "vpt_table10.csv", "figure": "vpt_figure16.png"},
        lambda wc: {"runs": f"{RESULTS}/collected/{BB}/vtab1k.csv"},
        lambda input, output: dict(
            runs=input.runs,
            reference="vpt_deep",
            strategies=study.family_strategies(config, "vtab1k"),
            tasks=study.vtab_tasks(config),
            alpha=config["analyses"]["claims"]["alpha"],
            table=output.table,
            figure=output.figure,
        ),
        lambda: study.compares_ft_and_vpt(config),
    ),
    Rendered(
        "figure_overview",
        study.OVERVIEW_FIGURE,
        "overview.ipynb",
        {"figure": "vpt_figure1.png", "csv": "vpt_figure1.csv"},
        lambda wc: {
            "runs": expand(
                f"{RESULTS}/collected/{BB}/{{family}}.csv",
                family=[
                    f
                    for f in ("fgvc", "vtab1k")
                    if f in study.backbone_families(config, BB)
                ],
            )
        },
        lambda input, output: dict(
            runs=list(input.runs),
            strategies=study.family_strategies(config, "vtab1k"),
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: study.compares_ft_and_vpt(config),
    ),
    Rendered(
        "figure_examples",
        "figure19",
        "examples.ipynb",
        {"figure": "figure19.png", "vpt_figure": "vpt_figure10.png"},
        lambda wc: {"examples": f"{RESULTS}/examples.npz"},
        lambda input, output: dict(
            examples=input.examples,
            figures=[output.figure, output.vpt_figure],
        ),
        lambda: bool(example_tasks()),
        captions={"vpt_figure": "figure19"},
    ),
    Rendered(
        "cost_table",
        study.COST_TABLE,
        "cost.ipynb",
        {
            "table": "vpt_table12.csv",
            "figure18": "vpt_figure18.png",
            "figure19": "vpt_figure19.png",
        },
        lambda wc: {"measured": f"{RESULTS}/cost/{BB}/latency.csv"},
        lambda input, output: dict(
            measured=input.measured,
            table=output.table,
            figure18=output.figure18,
            figure19=output.figure19,
        ),
        lambda: bool(config["analyses"].get("cost")),
        captions={"figure19": "vpt_figure18"},
    ),
    Rendered(
        "figure_ensemble",
        study.ENSEMBLE_FIGURE,
        "ensemble.ipynb",
        {"figure": "vpt_figure15.png", "csv": "vpt_figure15.csv"},
        lambda wc: {"members": ensemble_members()},
        lambda input, output: dict(
            members=list(input.members), figure=output.figure, csv=output.csv
        ),
        lambda: not study.output_problem(config, study.ENSEMBLE_FIGURE),
    ),
    Rendered(
        "figure_pruning",
        study.PRUNING_FIGURE,
        "pruning.ipynb",
        {"figure": "adapt_figure3.png", "csv": "adapt_figure3.csv"},
        lambda wc: {"metrics": pruning_run()},
        lambda input, output: dict(
            metrics=input.metrics, figure=output.figure, csv=output.csv
        ),
        lambda: bool(config["analyses"].get("pruning")),
    ),
    Rendered(
        "figure_clip_fewshot",
        study.CLIP_FIGURE,
        "clip_fewshot.ipynb",
        {"figure": "adapt_figure1.png", "csv": "adapt_figure1.csv"},
        lambda wc: {"table": f"{RESULTS}/{study.CLIP_TABLE}.csv"},
        lambda input, output: dict(
            table=input.table,
            tasks=study.table_tasks(config, study.CLIP_TABLE),
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: study.CLIP_TABLE in config["tables"],
    ),
    Rendered(
        "claims",
        "claims",
        "claims.ipynb",
        {"md": "claims.md", "csv": "claims.csv"},
        lambda wc: {
            "runs": expand(
                f"{RESULTS}/collected/{BB}/{{family}}.csv",
                family=study.claim_families(config),
            ),
            "fid": f"{RESULTS}/fid.csv",
        },
        lambda input, output: dict(
            runs=dict(zip(study.claim_families(config), input.runs)),
            fid=input.fid,
            benchmark=BENCH,
            backbone=BB,
            alpha=config["analyses"]["claims"]["alpha"],
            md=output.md,
            csv=output.csv,
        ),
        lambda: study.compares_ft_and_vpt(config),
    ),
]


def _ablation(name):
    """An ablation of the VPT or Adapt papers (a `figures` entry): its settings' runs as grouped bars."""
    entry = config["figures"][name]
    return Rendered(
        f"ablation_{name}",
        name,
        "ablation.ipynb",
        {"figure": f"{name}.png", "csv": f"{name}.csv"},
        lambda wc: {"runs": output_runs(name)},
        lambda input, output: dict(
            runs=list(input.runs),
            strategies=study.table_strategies(config, name),
            tasks=study.table_tasks(config, name),
            title=entry["title"],
            figure=output.figure,
            csv=output.csv,
        ),
        lambda: True,
        captions={"figure": "ablation"},
    )


RENDERED += [_ablation(name) for name in config["figures"]]
RENDERED += [_tsne(name) for name in study.TSNE_FIGURES]
