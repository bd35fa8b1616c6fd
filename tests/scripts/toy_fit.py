"""A small deterministic training run for the kill/resume tests: python toy_fit.py CHECKPOINT OUT_JSON."""

import json
import sys

import torch

from vptft import engine
from vptft.backbones.factory import create_backbone
from vptft.data import SplitData
from vptft.strategies import get_strategy

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
checkpoint, out = sys.argv[1], sys.argv[2]
g = torch.Generator().manual_seed(0)
labels = torch.arange(256) % 4
images = torch.randint(0, 255, (256, 3, 32, 32), generator=g, dtype=torch.uint8)
torch.manual_seed(0)
model = get_strategy("vpt_deep").build(
    create_backbone("mini_vit", pretrained=False), 4, prompt_length=2, prompt_dropout=0.1
)
cfg = engine.FitConfig("sgd", lr=0.5, weight_decay=1e-4, epochs=6, warmup_epochs=1, batch_size=8, seed=7)
result = engine.fit(
    model,
    SplitData(images, labels),
    {"test": SplitData(images[:64], labels[:64])},
    cfg,
    {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3},
    torch.device("cpu"),
    checkpoint=checkpoint if checkpoint != "-" else None,
)
with open(out, "w") as f:
    json.dump({"curves": result["curves"], "prompts": model.prompts.detach().flatten().tolist()}, f)
