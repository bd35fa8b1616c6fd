"""Contrastive image-text pre-training of the mini CLIP on the rendered source set: the mini benchmark's stand-in
for CLIP's 400M web pairs, so zero-shot CLIP, CoOp, VPT and Adapt can be compared on a laptop (Adapt's own
experiment).

The renderer knows what it drew: an image's captions name its shape through each of CAPTION_TEMPLATES. CLIP's
symmetric InfoNCE, between the batch's images and every caption the set has (12 shapes x 4 templates; a batch
holds many images of one caption, and calling their pairs negatives would push apart what the captions say is the
same): each image against all captions (its shape's captions are its positives), each caption of a shape in the
batch against the batch's images (that shape's images are its positives). With positives taken pair by pair
within a 64-image batch the mini model collapsed to constant features for its first ~50 steps. The model is open_clip's `CLIP` module itself, saved in its
state-dict layout, so the registry's `open_clip` loader reads it as it reads a downloaded file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip import tokenize
from open_clip.model import CLIP

CAPTION_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "an image of a {}.")
ZERO_SHOT_TEMPLATE = "a photo of a {}."  # the mini tasks' class template (CLIP's own ImageNet-style prompt)


def captions(class_names: list[str], template: str) -> list[str]:
    return [template.format(name.replace("_", " ")) for name in class_names]


class ImageTextLearner(torch.nn.Module):
    """open_clip's CLIP with every (class, template) caption tokenized once."""

    def __init__(self, clip: CLIP, class_names: list[str], context_length: int):
        super().__init__()
        self.clip = clip
        texts = [c for template in CAPTION_TEMPLATES for c in captions(class_names, template)]
        self.register_buffer("tokens", tokenize(texts, context_length=context_length), persistent=False)
        self.num_classes = len(class_names)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Symmetric InfoNCE of normalised images against every caption, positives spread evenly (soft targets);
        `generator` is unused (every caption is in every step)."""
        image = F.normalize(self.clip.encode_image(images), dim=-1)
        text = F.normalize(self.clip.encode_text(self.tokens), dim=-1)
        logits = self.clip.logit_scale.exp().clamp(max=100) * image @ text.T  # (images, captions)
        shape = torch.arange(len(self.tokens), device=labels.device) % self.num_classes
        positive = (labels[:, None] == shape[None, :]).float()
        present = positive.sum(0) > 0
        image_to_text = F.cross_entropy(logits, positive / positive.sum(1, keepdim=True))
        by_caption = positive.T[present]
        text_to_image = F.cross_entropy(logits.T[present], by_caption / by_caption.sum(1, keepdim=True))
        return (image_to_text + text_to_image) / 2

    def zero_shot_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised images from ZERO_SHOT_TEMPLATE's captions."""
        first = CAPTION_TEMPLATES.index(ZERO_SHOT_TEMPLATE) * self.num_classes
        text = self.clip.encode_text(self.tokens[first : first + self.num_classes])
        image = self.clip.encode_image(images)
        return F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
