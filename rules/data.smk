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
    wildcard_constraints:
        regime="vtab1k|scale[0-9]+|fewshot[0-9]+_draw[0-9]+|fgvc|fraction[0-9]+|coop[0-9]+_draw[0-9]+",
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


rule prototype_splits:
    input:
        data_info=rules.download.output,
        backbone=backbone_checkpoint,
    output:
        f"{RESULTS}/splits/{{task}}/{{regime}}.json",
    log:
        f"{LOGS}/splits/{{task}}/{{regime}}.log",
    benchmark:
        f"{BENCHMARKS}/splits/{{task}}/{{regime}}.tsv"
    wildcard_constraints:
        regime="fewshot[0-9]+_prototype",
    conda:
        "../envs/train.yaml"
    threads: stage_resources("analysis")["threads"]
    resources:
        mem_mb=stage_resources("analysis")["mem_mb"],
        runtime=stage_resources("analysis")["runtime"],
        gpu=stage_resources("analysis")["gpu"],
    params:
        threads=stage_resources("analysis")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: spec(
            task=wc.task,
            regime=wc.regime,
            data_dir=DATA,
            sizes=regime_spec(wc.regime, config["regimes"]),
            backbone=BB,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
        ),
        backbone=lambda wc, input: backbone_arg(input),
    shell:
        "python -m vptft splits --spec {params.spec:q} --threads {params.threads} --data-info {input.data_info:q} "
        "{params.backbone} --out {output:q} > {log:q} 2>&1"
