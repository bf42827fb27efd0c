"""t-SNE of clean and adversarial logits for a few classes (scikit-learn)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from atlens.attacks.pgd import mode
from atlens.data import ImageTensors


def class_subset(data: ImageTensors, classes: int, per_class: int) -> ImageTensors:
    """The first ``per_class`` examples of each of the first ``classes`` classes."""
    chosen = [torch.nonzero(data.labels == c).flatten()[:per_class] for c in range(classes)]
    return data.subset(torch.cat(chosen))


def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad(), mode(model, False):
        return torch.cat([model(images[i:i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)])


def tsne_embedding(clean_logits: torch.Tensor, adversarial_logits: torch.Tensor, labels: torch.Tensor,
                   seed: int = 0) -> dict[str, Any]:
    """One joint 2-D embedding of both sets, so clean and adversarial points share coordinates."""
    from sklearn.manifold import TSNE

    points = torch.cat([clean_logits, adversarial_logits]).numpy()
    perplexity = min(30.0, (len(points) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    n = len(clean_logits)
    return {"labels": labels.tolist(), "clean": xy[:n].tolist(), "adversarial": xy[n:].tolist()}
