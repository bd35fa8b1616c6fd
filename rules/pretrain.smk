rule pretrain:
    output:
        model=f"{RESULTS}/backbones/{{backbone}}/model.safetensors",
        report=f"{RESULTS}/backbones/{{backbone}}/pretrain.json",
    log:
        f"{LOGS}/pretrain/{{backbone}}.log",
    benchmark:
        f"{BENCHMARKS}/pretrain/{{backbone}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: stage_resources("pretrain")["threads"]
    resources:
        mem_mb=stage_resources("pretrain")["mem_mb"],
        runtime=stage_resources("pretrain")["runtime"],
        gpu=stage_resources("pretrain")["gpu"],
    params:
        threads=stage_resources("pretrain")["threads"],  # the arithmetic's, not the cores granted
        spec=lambda wc: spec(
            backbone=wc.backbone,
            pretrain=study.pretrain_config(config, wc.backbone),
            device=config["train"]["device"],
        ),
        out_dir=lambda wc, output: os.path.dirname(output.model),
    shell:
        "python -m vptft pretrain --spec {params.spec:q} --threads {params.threads} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
