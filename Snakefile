# VPT vs full finetuning, end to end: data -> splits -> (pre-trained) backbone -> sweeps and seeds -> tables.
# Default config: the embedded mini benchmark. The study: --configfile config/paper.yaml


# The default config is the mini benchmark; a --configfile replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/train.smk"
include: "rules/analyses.smk"
include: "rules/outputs.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
