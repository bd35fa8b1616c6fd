"""Linear probing: only a new head trains on the frozen backbone's CLS feature (features are cached once)."""

from vptft.strategies.full import Classifier
from vptft.strategies.heads import FrozenBackboneMixin, freeze


class LinearProbe(FrozenBackboneMixin, Classifier):
    pass


def build(backbone, num_classes, head_init="vpt"):
    model = LinearProbe(backbone, num_classes, head_init)
    freeze(model.backbone)
    return model
