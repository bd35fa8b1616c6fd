rule sweep:
    input:
        manifest=rules.splits.output,
        backbone=backbone_checkpoint,
    output:
        f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/sweep/chunk{{chunk}}.csv",
    params:
        spec=run_spec,
        backbone=lambda wc, input: backbone_arg(input),
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=stage_resources("train")["runtime"],
        gpu=stage_resources("train")["gpu"],
    log:
        f"{LOGS}/sweep/{{task}}/{{regime}}/{{strategy}}/chunk{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/sweep/{{task}}/{{regime}}/{{strategy}}/chunk{{chunk}}.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "python -m vptft sweep --spec {params.spec:q} --threads {threads} --manifest {input.manifest:q} "
        "{params.backbone} --chunk {wildcards.chunk} --out {output:q} > {log:q} 2>&1"


rule select:
    input:
        lambda wc: expand(
            f"{RUNS}/{wc.task}/{wc.regime}/{wc.strategy}/sweep/chunk{{chunk}}.csv",
            chunk=range(n_chunks(wc.strategy)),
        ),
    output:
        f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/sweep.csv",
    params:
        spec=lambda wc: spec(grid_size=grid_size(config["strategies"][wc.strategy]["grid"])),
    log:
        f"{LOGS}/select/{{task}}/{{regime}}/{{strategy}}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "python -m vptft select --spec {params.spec:q} --chunks {input:q} --out {output:q} > {log:q} 2>&1"


rule train:
    input:
        manifest=rules.splits.output,
        backbone=backbone_checkpoint,
        sweep=rules.select.output,
    output:
        metrics=f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/seed{{seed}}/metrics.json",
        curves=f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/seed{{seed}}/curves.csv",
        tuned=f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/seed{{seed}}/tuned.safetensors",
    params:
        spec=run_spec,
        backbone=lambda wc, input: backbone_arg(input),
        out_dir=lambda wc, output: os.path.dirname(output.metrics),
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=stage_resources("train")["runtime"],
        gpu=stage_resources("train")["gpu"],
    log:
        f"{LOGS}/train/{{task}}/{{regime}}/{{strategy}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{task}}/{{regime}}/{{strategy}}/seed{{seed}}.tsv"
    conda:
        "../envs/train.yaml"
    shell:
        "python -m vptft train --spec {params.spec:q} --threads {threads} --manifest {input.manifest:q} "
        "{params.backbone} --sweep {input.sweep:q} --seed {wildcards.seed} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
