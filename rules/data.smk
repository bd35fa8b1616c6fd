rule download:
    output:
        f"{DATA}/{BENCH}/{{task}}.json",
    log:
        f"{LOGS}/download/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/download/{{task}}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: spec(task=wc.task, data_dir=DATA),
    shell:
        "python -m vptft download --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule splits:
    input:
        rules.download.output,
    output:
        f"{RESULTS}/splits/{{task}}/{{regime}}.json",
    log:
        f"{LOGS}/splits/{{task}}/{{regime}}.log",
    benchmark:
        f"{BENCHMARKS}/splits/{{task}}/{{regime}}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: spec(
            task=wc.task,
            regime=wc.regime,
            data_dir=DATA,
            sizes=regime_spec(wc.regime, config["regimes"]),
        ),
    shell:
        "python -m vptft splits --spec {params.spec:q} --data-info {input:q} --out {output:q} > {log:q} 2>&1"
