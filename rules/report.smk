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


# Figures and reports: a rule per row of rules/outputs.smk's table, each running the row's notebook.
for rendered in RENDERED:

    rule:
        name:
            rendered.rule_name
        input:
            unpack(rendered.input_files),
            notebook=os.path.join(NOTEBOOKS, rendered.notebook),
        output:
            **rendered.output_files(),
            notebook=f"{RESULTS}/{rendered.name}.ipynb",
        log:
            f"{LOGS}/report/{rendered.name}.log",
        conda:
            "../envs/report.yaml"
        params:
            spec=rendered.params,
            tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
        shell:
            "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
            "&& mv {params.tmp_notebook:q} {output.notebook:q}"
