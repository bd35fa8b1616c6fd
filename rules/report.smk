rule table:
    input:
        metrics=table_metrics,
        notebook=os.path.join(NOTEBOOKS, "vtab_table.ipynb"),
    output:
        csv=f"{RESULTS}/{{table}}.csv",
        runs=f"{RESULTS}/{{table}}_runs.csv",
        notebook=f"{RESULTS}/{{table}}.ipynb",
    log:
        f"{LOGS}/report/{{table}}.log",
    benchmark:
        f"{BENCHMARKS}/report/{{table}}.tsv"
    conda:
        "../envs/report.yaml"
    params:
        spec=lambda wc, input, output: spec(
            table=wc.table,
            benchmark=BENCH,
            backbone=BB,
            groups=config["tables"][wc.table]["groups"],
            tasks=table_tasks(wc.table),
            strategies=list(config["strategies"]),
            metrics=list(input.metrics),
            out_csv=output.csv,
        ),
        tmp_notebook=lambda wc, output: f"{output.notebook}.tmp",
    shell:
        "papermill {input.notebook:q} {params.tmp_notebook:q} -p spec {params.spec:q} > {log:q} 2>&1 "
        "&& mv {params.tmp_notebook:q} {output.notebook:q}"


rule paper_name:
    input:
        f"{RESULTS}/{{table}}.csv",
    output:
        "results/{table}.csv",
    log:
        f"{LOGS}/report/{{table}}_paper_name.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    shell:
        "(cp {input:q} {output:q}.tmp && mv {output:q}.tmp {output:q}) > {log:q} 2>&1"
