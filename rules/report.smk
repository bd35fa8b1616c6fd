rule collect:
    input:
        family_metrics,
    output:
        f"{RESULTS}/collected/{{backbone}}/{{family}}/{{task}}/{{strategy}}.csv",
    log:
        f"{LOGS}/collect/{{backbone}}/{{family}}/{{task}}/{{strategy}}.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc: spec(
            family=wc.family, vtab1k_n_train=config["regimes"]["vtab1k"]["n_train"]
        ),
    shell:
        "python -m vptft collect --spec {params.spec:q} --metrics {input:q} --out {output:q} > {log:q} 2>&1"


rule collect_family:
    input:
        lambda wc: collected(wc.family, study.family_runs(config, wc.family)),
    output:
        report(
            f"{RESULTS}/collected/{BB}/{{family}}.csv",
            caption="../report/collected.rst",
            category="Runs",
        ),
    log:
        f"{LOGS}/collect/{{family}}.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    shell:
        "python -m vptft concat --tables {input:q} --out {output:q} > {log:q} 2>&1"


rule table:
    input:
        runs=buildable(lambda wc: f"{wc.table}.csv", table_runs),
        fid=table_fid,
        notebook=os.path.join(NOTEBOOKS, "vtab_table.ipynb"),
    output:
        **({"vs_paper": f"{RESULTS}/{{table}}_vs_paper.csv"} if BENCH == "vtab" else {}),
        csv=report(
            f"{RESULTS}/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
        runs=f"{RESULTS}/{{table}}_runs.csv",
        notebook=f"{RESULTS}/{{table}}.ipynb",
    log:
        f"{LOGS}/report/{{table}}.log",
    benchmark:
        f"{BENCHMARKS}/report/{{table}}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        spec=table_spec,
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule paper_name:
    input:
        source=f"{RESULTS}/{{name}}",
        note=foreign_copy_note,
    output:
        "results/{name}",
    log:
        f"{LOGS}/report/{{name}}_paper_name.log",
    wildcard_constraints:
        name=PAPER_NAMES,
    localrule: True
    conda:
        "../envs/report.yaml"
    shell:
        "(cat {input.note:q} && cp {input.source:q} {output:q}.tmp && mv {output:q}.tmp {output:q}) > {log:q} 2>&1"


# The note paper_name starts from: nothing found yet under the unqualified name.
rule paper_name_note:
    output:
        f"{RESULTS}/.paper_names/{{name}}.json",
    log:
        f"{LOGS}/report/{{name}}_paper_name_note.log",
    wildcard_constraints:
        name=PAPER_NAMES,
    localrule: True
    conda:
        "../envs/report.yaml"
    shell:
        "echo '{{}}' > {output:q} 2> {log:q}"


rule figure_fid:
    input:
        fid=buildable(
            "figure3.png",
            expand(f"{RESULTS}/fid/{{task}}.json", task=study.vtab_tasks(config)),
        ),
        runs=lambda wc: collected("vtab1k", study.vtab_tasks(config), fid_strategies()),
        notebook=os.path.join(NOTEBOOKS, "fid.ipynb"),
    output:
        figure=report(
            f"{RESULTS}/figure3.png",
            caption="../report/figure3.rst",
            category="Figures",
        ),
        csv=f"{RESULTS}/fid.csv",
        notebook=f"{RESULTS}/figure3.ipynb",
    log:
        f"{LOGS}/report/figure3.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            fid=list(input.fid),
            runs=list(input.runs),
            figure=output.figure,
            csv=output.csv,
            benchmark=BENCH,
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule figure_scaling:
    input:
        runs=buildable(
            "figure4.png",
            lambda wc: collected(
                "scaling",
                study.family_tasks(config, "scaling"),
                study.family_strategies(config, "scaling"),
            ),
        ),
        notebook=os.path.join(NOTEBOOKS, "scaling.ipynb"),
    output:
        figure=report(
            f"{RESULTS}/figure4.png",
            caption="../report/figure4.rst",
            category="Figures",
        ),
        overfitting=report(
            f"{RESULTS}/figure6.png",
            caption="../report/figure6.rst",
            category="Figures",
        ),
        notebook=f"{RESULTS}/figure4.ipynb",
    log:
        f"{LOGS}/report/figure4.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            runs=list(input.runs),
            strategies=study.family_strategies(config, "scaling"),
            figure=output.figure,
            overfitting=output.overfitting,
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule figure_fraction:
    input:
        runs=buildable(
            "vpt_figure3.png",
            lambda wc: collected(
                "fraction",
                study.family_tasks(config, "fraction"),
                study.family_strategies(config, "fraction"),
            ),
        ),
        notebook=os.path.join(NOTEBOOKS, "fraction.ipynb"),
    output:
        figure3=report(
            f"{RESULTS}/vpt_figure3.png",
            caption="../report/vpt_figure3.rst",
            category="Figures",
        ),
        figure20=report(
            f"{RESULTS}/vpt_figure20.png",
            caption="../report/vpt_figure20.rst",
            category="Figures",
        ),
        notebook=f"{RESULTS}/vpt_figure3.ipynb",
    log:
        f"{LOGS}/report/vpt_figure3.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            runs=list(input.runs),
            strategies=study.family_strategies(config, "fraction"),
            figure3=output.figure3,
            figure20=output.figure20,
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule figure_model_scale:
    input:
        runs=buildable("vpt_figure4.png", lambda wc: output_runs(study.MODEL_SCALE)),
        notebook=os.path.join(NOTEBOOKS, "model_scale.ipynb"),
    output:
        figure=report(
            f"{RESULTS}/vpt_figure4.png",
            caption="../report/vpt_figure4.rst",
            category="Figures",
        ),
        csv=f"{RESULTS}/vpt_figure4.csv",
        notebook=f"{RESULTS}/vpt_figure4.ipynb",
    log:
        f"{LOGS}/report/vpt_figure4.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            runs=list(input.runs),
            backbones=study.table_backbones(config, study.MODEL_SCALE),
            strategies=study.table_strategies(config, study.MODEL_SCALE),
            groups=study.output_entry(config, study.MODEL_SCALE)["groups"],
            figure=output.figure,
            csv=output.csv,
            provenance=stamp_of(study.MODEL_SCALE),
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule figure_curves:
    input:
        runs=buildable(
            "figure5.png",
            lambda wc: collected(
                "vtab1k", study.vtab_tasks(config), curve_strategies()
            ),
        ),
        notebook=os.path.join(NOTEBOOKS, "curves.ipynb"),
    output:
        **{
            name: report(
                f"{RESULTS}/{name}.png",
                caption=f"../report/{name.split('_')[0]}.rst",
                category="Figures",
            )
            for name in CURVE_FIGURES
        },
        notebook=f"{RESULTS}/figure5.ipynb",
    log:
        f"{LOGS}/report/figure5.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            runs=list(input.runs),
            tasks=curve_tasks(),
            strategies=curve_strategies(),
            figures={name: output[name] for name in CURVE_FIGURES},
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule figure_attribution:
    input:
        maps=buildable(
            "figure8.png",
            lambda wc: expand(
                f"{RESULTS}/attribution/{{task}}/maps.npz", task=attribution_tasks()
            ),
        ),
        notebook=os.path.join(NOTEBOOKS, "attribution.ipynb"),
    output:
        **{
            name: report(
                f"{RESULTS}/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in ATTRIBUTION_FIGURES
        },
        index=f"{RESULTS}/attribution/index.csv",
        notebook=f"{RESULTS}/figure8.ipynb",
    log:
        f"{LOGS}/report/figure8.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            maps=dict(zip(attribution_tasks(), input.maps)),
            tasks=config["analyses"]["attribution"]["tasks"],
            quadrant_tasks=config["analyses"]["attribution"]["quadrant_tasks"],
            figures={name: output[name] for name in ATTRIBUTION_FIGURES},
            index=output.index,
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule claims:
    input:
        runs=buildable(
            "claims.md",
            expand(
                f"{RESULTS}/collected/{BB}/{{family}}.csv",
                family=study.claim_families(config),
            ),
        ),
        fid=f"{RESULTS}/fid.csv",
        notebook=os.path.join(NOTEBOOKS, "claims.ipynb"),
    output:
        md=report(
            f"{RESULTS}/claims.md", caption="../report/claims.rst", category="Claims"
        ),
        csv=f"{RESULTS}/claims.csv",
        notebook=f"{RESULTS}/claims.ipynb",
    log:
        f"{LOGS}/report/claims.log",
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            runs=dict(zip(study.claim_families(config), input.runs)),
            fid=input.fid,
            benchmark=BENCH,
            backbone=BB,
            alpha=config["analyses"]["claims"]["alpha"],
            md=output.md,
            csv=output.csv,
            provenance=PROVENANCE,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"
