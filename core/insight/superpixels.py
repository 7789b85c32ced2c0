"""LIME on superpixels for 28×28 digits: SLIC segments that follow strokes, and a fit per class.

`lime_superpixels(probabilities, image)` returns a `LimeResult` (segments, weights for all 10 classes);
`core.insight.explain.Explainer.lime` calls it with its model's probabilities and caches the result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


def readonly(a: Any, dtype: Any = np.float32) -> np.ndarray:
    """A read-only contiguous copy: results are cached and shared between sessions."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    out = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class LimeResult:
    """LIME on superpixels: a linear fit of p(class) on which segments are kept (others set to black)."""

    segments: np.ndarray  # (28, 28) int segment id per pixel, 0..n_segments-1
    weights: np.ndarray  # (10, n_segments) weight of each segment for each class, probability units
    intercepts: np.ndarray  # (10,)
    scores: np.ndarray  # (10,) R² of each local linear fit (how well the fit describes the model)
    label: int  # the predicted class
    top_positive: tuple[int, ...]  # segment ids pushing `label` up, strongest first (at most 5)
    top_negative: tuple[int, ...]  # segment ids pushing `label` down, strongest first (at most 5)
    num_samples: int
    probs: np.ndarray  # (10,)
    image: np.ndarray  # (28, 28)
    seconds: float

    @property
    def n_segments(self) -> int:
        return int(self.weights.shape[1])

    @property
    def heatmap(self) -> np.ndarray:
        """(28, 28): each segment's weight for the predicted class painted on its pixels."""
        return self.heatmap_for(self.label)

    def heatmap_for(self, cls: int) -> np.ndarray:
        """(28, 28): each segment's weight for class `cls` painted on its pixels."""
        return self.weights[int(cls)][self.segments]


def lime_superpixels(probabilities: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, num_samples: int = 1000,
                     n_segments: int = 40, batch_size: int = 500, seed: int = 0) -> LimeResult:
    """LIME for one image (1, 1, 28, 28): `probabilities` maps image batches to (N, 10) softmax outputs."""
    from lime import lime_image
    from sklearn.metrics import pairwise_distances

    start = time.perf_counter()
    grey = x[0, 0].numpy().astype(np.float64)
    segments = segment(grey, n_segments)
    n = int(segments.max()) + 1
    # LIME's own sampling, kernel and weighted ridge fit; the perturbed images are built in one
    # vectorised step (lime's per-sample Python loop and tqdm bar cost more than the model here).
    lime = lime_image.LimeImageExplainer(random_state=seed)  # fresh each call: same samples every time
    data = lime.random_state.randint(0, 2, num_samples * n).reshape(num_samples, n)
    data[0, :] = 1  # the first sample is the image itself
    kept = torch.from_numpy(data[:, segments].astype(np.float32))  # (num_samples, 28, 28); hidden -> black
    perturbed = (x[0] * kept[:, None]).float()
    labels = torch.cat([probabilities(perturbed[i:i + batch_size])
                        for i in range(0, num_samples, batch_size)]).double().numpy()
    distances = pairwise_distances(data, data[:1], metric="cosine").ravel()
    weights, intercepts, scores = np.zeros((10, n)), np.zeros(10), np.zeros(10)
    for cls in range(10):
        intercepts[cls], pairs, scores[cls], _ = lime.base.explain_instance_with_data(
            data, labels, distances, cls, n, feature_selection=lime.feature_selection)
        for seg, w in pairs:
            weights[cls, seg] = w
    probs = readonly(labels[0])
    label = int(np.argmax(probs))
    order = np.argsort(-weights[label])
    top_pos = tuple(int(s) for s in order[:5] if weights[label, s] > 0)
    top_neg = tuple(int(s) for s in order[::-1][:5] if weights[label, s] < 0)
    return LimeResult(readonly(segments, np.int64), readonly(weights), readonly(intercepts), readonly(scores),
                      label, top_pos, top_neg, num_samples, probs, readonly(grey), time.perf_counter() - start)


def segment(grey: np.ndarray, n_segments: int = 40) -> np.ndarray:
    """SLIC superpixels for a 28×28 grey image: ≈30 that follow a digit's strokes (quickshift gives a handful).

    On stroke-less images (noise) a small compactness collapses to a few segments: then near-square ones."""
    from skimage.segmentation import slic

    rgb = np.repeat(grey[..., None], 3, -1)
    segments = slic(rgb, n_segments=n_segments, compactness=0.1, start_label=0, channel_axis=-1)
    if segments.max() + 1 < n_segments // 4:
        segments = slic(rgb, n_segments=n_segments, compactness=30.0, start_label=0, channel_axis=-1)
    return segments
