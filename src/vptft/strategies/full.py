"""Full finetuning: every backbone weight and a new head train (AdamW)."""

from torch import nn

from vptft.strategies.heads import make_head


class Classifier(nn.Module):
    """backbone -> pooled final-norm CLS feature -> head."""

    def __init__(self, backbone: nn.Module, num_classes: int, head_init: str = "vpt"):
        super().__init__()
        self.backbone = backbone
        self.head = make_head(backbone.num_features, num_classes, head_init)

    def forward_features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.forward_features(x))


def build(backbone, num_classes, head_init="vpt"):
    return Classifier(backbone, num_classes, head_init)
