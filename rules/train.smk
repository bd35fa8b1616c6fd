rule sweep:
    input:
        manifest=rules.splits.output,
        backbone=backbone_checkpoint,
        start_from=lambda wc: continued_runs(wc, "sweep"),
    output:
        f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/sweep/chunk{{chunk}}.csv",
    log:
        f"{LOGS}/sweep/{{backbone}}/{{task}}/{{regime}}/{{strategy}}/chunk{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/sweep/{{backbone}}/{{task}}/{{regime}}/{{strategy}}/chunk{{chunk}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=lambda wc: requested_runtime(wc, "sweep", chunk=wc.chunk),
        gpu=stage_resources("train")["gpu"],
    params:
        threads=stage_resources("train")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: run_spec(wc, "sweep"),
        backbone=lambda wc, input: backbone_arg(input),
        start_from=lambda wc, input: start_from_arg(input),
    shell:
        "python -m vptft sweep --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} {params.start_from} --chunk {wildcards.chunk} --out {output:q} > {log:q} 2>&1"


rule select:
    input:
        lambda wc: expand(
            f"{runs_dir(wc.backbone)}/{wc.task}/{wc.regime}/{wc.strategy}/sweep/chunk{{chunk}}.csv",
            chunk=range(n_chunks(wc)),
        ),
    output:
        f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/sweep.csv",
    log:
        f"{LOGS}/select/{{backbone}}/{{task}}/{{regime}}/{{strategy}}.log",
    conda:
        "../envs/train.yaml"
    params:
        spec=lambda wc: spec(
            grid_size=grid_size(
                PLANNERS[wc.backbone].config["strategies"][wc.strategy]["grid"]
            )
        ),
    shell:
        "python -m vptft select --spec {params.spec:q} --chunks {input:q} --out {output:q} > {log:q} 2>&1"


rule stage1:
    input:
        manifest=rules.splits.output,
        backbone=backbone_checkpoint,
        sweep=rules.select.output,
    output:
        f"{RUNS}/{{task}}/{{regime}}/{{strategy}}/stage1.safetensors",
    log:
        f"{LOGS}/stage1/{{backbone}}/{{task}}/{{regime}}/{{strategy}}.log",
    benchmark:
        f"{BENCHMARKS}/stage1/{{backbone}}/{{task}}/{{regime}}/{{strategy}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=lambda wc: requested_runtime(wc, "sweep"),
        gpu=stage_resources("train")["gpu"],
    params:
        threads=stage_resources("train")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: run_spec(wc, "stage1"),
        backbone=lambda wc, input: backbone_arg(input),
    shell:
        "python -m vptft stage1 --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} --sweep {input.sweep:q} --out {output:q} > {log:q} 2>&1"


rule train:
    input:
        manifest=rules.splits.output,
        backbone=backbone_checkpoint,
        sweep=selected_sweep,
        start_from=lambda wc: continued_runs(wc, "train"),
    output:
        metrics=seed_files("metrics.json", TRAIN_SEEDS),
        curves=seed_files("curves.csv", TRAIN_SEEDS),
        tuned=seed_files("tuned.safetensors", TRAIN_SEEDS),
    log:
        f"{LOGS}/train/{{backbone}}/{{task}}/{{regime}}/{{strategy}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{backbone}}/{{task}}/{{regime}}/{{strategy}}.tsv"
    wildcard_constraints:
        strategy=TRAIN_SEEDS_STRATEGIES,
    conda:
        "../envs/train.yaml"
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=lambda wc: requested_runtime(wc, "train"),
        gpu=stage_resources("train")["gpu"],
        checkpoint_minutes=config["train"]["checkpoint_minutes"],  # a resource: changing it re-runs nothing
    params:
        threads=stage_resources("train")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: run_spec(wc, "train"),
        backbone=lambda wc, input: backbone_arg(input),
        seeds=" ".join(map(str, TRAIN_SEEDS)),
        runs_dir=lambda wc: f"{runs_dir(wc.backbone)}/{wc.task}/{wc.regime}/{wc.strategy}",
        start_from=lambda wc, input: start_from_arg(input),
    shell:
        "python -m vptft train --spec {params.spec:q} --threads {params.threads} --manifest {input.manifest:q} "
        "{params.backbone} {params.start_from} --sweep {input.sweep:q} --seeds {params.seeds} "
        "--runs-dir {params.runs_dir:q} --checkpoint-minutes {resources.checkpoint_minutes} > {log:q} 2>&1"


# The final runs the claims read (FT and VPT on the main backbone, every family) with their own seeds,
# `analyses.claims.seeds`: the same job, its seeds in one process.
if CLAIM_SEEDS != TRAIN_SEEDS:

    use rule train as train_claims with:
        output:
            metrics=seed_files("metrics.json", CLAIM_SEEDS),
            curves=seed_files("curves.csv", CLAIM_SEEDS),
            tuned=seed_files("tuned.safetensors", CLAIM_SEEDS),
        wildcard_constraints:
            strategy="|".join(study.CLAIM_STRATEGIES),
            backbone=re.escape(BB),
        params:
            threads=stage_resources("train")["threads"],
            spec=lambda wc: run_spec(wc, "train"),
            backbone=lambda wc, input: backbone_arg(input),
            seeds=" ".join(map(str, CLAIM_SEEDS)),
            runs_dir=lambda wc: f"{runs_dir(wc.backbone)}/{wc.task}/{wc.regime}/{wc.strategy}",
            start_from=lambda wc, input: start_from_arg(input),

    ruleorder: train_seed > train_claims

    # FT and VPT on the extra backbones: their tables state no claim, so train.seeds (as every other strategy)
    if EXTRA_BACKBONES:

        use rule train as train_extra_backbones with:
            wildcard_constraints:
                strategy="|".join(study.CLAIM_STRATEGIES),
                backbone="|".join(map(re.escape, EXTRA_BACKBONES)),

        ruleorder: train_seed > train_extra_backbones


# Final runs whose seeds would not fit the runtime limit together (SPLIT_RUNS, from the cost estimate): one job
# per seed, same files. `run` = task/regime/strategy, matching only those runs.
ruleorder: train_seed > train


use rule train as train_seed with:
    input:
        manifest=lambda wc: f"{RESULTS}/splits/{run_of(wc).task}/{run_of(wc).regime}.json",
        backbone=backbone_checkpoint,
        sweep=lambda wc: selected_sweep(run_of(wc)),
        start_from=lambda wc: continued_runs(run_of(wc), "train", [int(wc.seed)]),
    output:
        metrics=f"{RUNS}/{{run}}/seed{{seed}}/metrics.json",
        curves=f"{RUNS}/{{run}}/seed{{seed}}/curves.csv",
        tuned=f"{RUNS}/{{run}}/seed{{seed}}/tuned.safetensors",
    log:
        f"{LOGS}/train/{{backbone}}/{{run}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{backbone}}/{{run}}/seed{{seed}}.tsv"
    wildcard_constraints:
        run="|".join(map(re.escape, SPLIT_RUNS)) or "(?!)",
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=lambda wc: requested_runtime(run_of(wc), "train", seeds=1),
        gpu=stage_resources("train")["gpu"],
        checkpoint_minutes=config["train"]["checkpoint_minutes"],
    params:
        threads=stage_resources("train")["threads"],
        spec=lambda wc: run_spec(run_of(wc), "train"),
        backbone=lambda wc, input: backbone_arg(input),
        seeds=lambda wc: wc.seed,
        runs_dir=lambda wc: f"{runs_dir(wc.backbone)}/{wc.run}",
        start_from=lambda wc, input: start_from_arg(input),
