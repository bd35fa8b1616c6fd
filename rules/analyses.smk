rule fid:
    input:
        manifest=home_manifest,
        backbone=backbone_checkpoint,
        reference=fid_reference,
    output:
        f"{RESULTS}/fid/{{task}}.json",
    log:
        f"{LOGS}/fid/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/fid/{{task}}.tsv"
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
            benchmark=BENCH,
            backbone=BB,
            data_dir=DATA,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
            fid={**config["analyses"]["fid"], "split": "trainval"},
        ),
        backbone=lambda wc, input: backbone_arg(input),
    shell:
        "python -m vptft fid --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} --out {output:q} > {log:q} 2>&1"


rule attribution:
    input:
        manifest=f"{RESULTS}/splits/{{task}}/vtab1k.json",
        backbone=backbone_checkpoint,
        runs=lambda wc: collected("vtab1k", [wc.task], ["full", "vpt_deep"]),
        full=f"{runs_dir(BB)}/{{task}}/vtab1k/full/seed{study.final_seeds(config, 'full')[0]}/metrics.json",
        vpt=f"{runs_dir(BB)}/{{task}}/vtab1k/vpt_deep/seed{study.final_seeds(config, 'vpt_deep')[0]}/metrics.json",
    output:
        maps=f"{RESULTS}/attribution/{{task}}/maps.npz",
        index=f"{RESULTS}/attribution/{{task}}/index.csv",
    log:
        f"{LOGS}/attribution/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/attribution/{{task}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: stage_resources("analysis")["threads"]
    resources:
        mem_mb=stage_resources("analysis")["mem_mb"],
        runtime=stage_resources("analysis")["runtime"],
        gpu=stage_resources("analysis")["gpu"],
    params:
        threads=stage_resources("analysis")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: spec(
            task=wc.task,
            backbone=BB,
            data_dir=DATA,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
            attribution=config["analyses"]["attribution"],
        ),
        backbone=lambda wc, input: backbone_arg(input),
        out_dir=lambda wc, output: os.path.dirname(output.maps),
    shell:
        "python -m vptft attribution --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} --runs-tables {input.runs:q} --full {input.full:q} --vpt {input.vpt:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


# The VPT paper's Figure 15: one strategy's seeds on one task as an ensemble, from their tuned parameters.
rule ensemble:
    input:
        manifest=f"{RESULTS}/splits/{{task}}/vtab1k.json",
        backbone=backbone_checkpoint,
        metrics=lambda wc: expand(
            f"{runs_dir(BB)}/{wc.task}/vtab1k/{wc.strategy}/seed{{seed}}/metrics.json",
            seed=study.final_seeds(config, wc.strategy),
        ),
    output:
        f"{RESULTS}/ensemble/{{task}}/{{strategy}}.csv",
    log:
        f"{LOGS}/ensemble/{{task}}/{{strategy}}.log",
    benchmark:
        f"{BENCHMARKS}/ensemble/{{task}}/{{strategy}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: stage_resources("analysis")["threads"]
    resources:
        mem_mb=stage_resources("analysis")["mem_mb"],
        runtime=stage_resources("analysis")["runtime"],
        gpu=stage_resources("analysis")["gpu"],
    params:
        threads=stage_resources("analysis")["threads"],
        spec=lambda wc: spec(
            task=wc.task,
            strategy=wc.strategy,
            backbone=BB,
            data_dir=DATA,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
        ),
        backbone=lambda wc, input: backbone_arg(input),
    shell:
        "python -m vptft ensemble --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} --metrics {input.metrics:q} --out {output:q} > {log:q} 2>&1"


# Example images of every task (Han et al.'s Figure 19, the VPT paper's Figure 10), decoded once.
rule examples:
    input:
        manifests=lambda wc: [example_manifest(task) for task in example_tasks()],
    output:
        f"{RESULTS}/examples.npz",
    log:
        f"{LOGS}/examples.log",
    benchmark:
        f"{BENCHMARKS}/examples.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wc: spec(tasks=example_tasks(), data_dir=DATA, per_task=4, side=96),
    shell:
        "python -m vptft examples --spec {params.spec:q} --manifests {input.manifests:q} --out {output:q} "
        "> {log:q} 2>&1"


# The VPT paper's Figures 9 and 21: t-SNE of each strategy's final features on a task's test images.
rule tsne:
    input:
        manifest=f"{RESULTS}/splits/{{task}}/vtab1k.json",
        backbone=backbone_checkpoint,
        metrics=lambda wc: [
            f"{runs_dir(BB)}/{wc.task}/vtab1k/{s}/seed{study.final_seeds(config, s)[0]}/metrics.json"
            for s in study.tsne_strategies(config)
        ],
    output:
        f"{RESULTS}/tsne/{{task}}.npz",
    log:
        f"{LOGS}/tsne/{{task}}.log",
    benchmark:
        f"{BENCHMARKS}/tsne/{{task}}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: stage_resources("analysis")["threads"]
    resources:
        mem_mb=stage_resources("analysis")["mem_mb"],
        runtime=stage_resources("analysis")["runtime"],
        gpu=stage_resources("analysis")["gpu"],
    params:
        threads=stage_resources("analysis")["threads"],
        spec=lambda wc: spec(
            task=wc.task,
            strategies=study.tsne_strategies(config),
            backbone=BB,
            data_dir=DATA,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
            tsne=config["analyses"]["tsne"],
        ),
        backbone=lambda wc, input: backbone_arg(input),
    shell:
        "python -m vptft tsne --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} --metrics {input.metrics:q} --out {output:q} > {log:q} 2>&1"


# The VPT paper's Table 12 and Figures 18-19: each strategy's latency, peak memory and GFLOPs on this machine.
rule latency:
    output:
        f"{RESULTS}/cost/{BB}/latency.csv",
    log:
        f"{LOGS}/cost/{BB}/latency.log",
    benchmark:
        f"{BENCHMARKS}/cost/{BB}/latency.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: exclusive_threads("analysis")  # alone on a local machine while it times
    resources:
        mem_mb=stage_resources("analysis")["mem_mb"],
        runtime=stage_resources("analysis")["runtime"],
        gpu=stage_resources("analysis")["gpu"],
    params:
        threads=stage_resources("analysis")["threads"],
        spec=lambda wc: spec(
            backbone=BB,
            normalization=config["train"]["normalization"],
            device=config["train"]["device"],
            precision=config["train"]["precision"],
            options={
                s: config["strategies"].get(s, {}).get("options", {})
                for s in config["analyses"]["cost"]["strategies"]
            },
            **config["analyses"]["cost"],
        ),
    shell:
        "python -m vptft latency --spec {params.spec:q} --threads {params.threads} --out {output:q} > {log:q} 2>&1"
