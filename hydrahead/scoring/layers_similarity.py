"""Layer analysis: the cosine-similarity matrix of layer outputs on probe data.

S[i, j] = mean over probes and token positions of cos(h_i(t), h_j(t)), with h_i the residual stream
leaving layer i. The paper shows block-wise structure in this matrix but finds that it says nothing
about where full attention should go, the argument for choosing heads rather than layers; we provide
it so that claim can be checked on any teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hydrahead.errors import ScoringError, shown
from hydrahead.scoring.probes import Probe
from hydrahead.scoring.runner import Runner
from hydrahead.utils.io import save_figure


@dataclass
class LayerSimilarity:
    """matrix: (layers, layers) mean cosine similarity of layer outputs."""

    matrix: np.ndarray

    def plot(self, path: str | Path, title: str = "layer output cosine similarity") -> None:
        """Heatmap saved in the format its suffix names (.png, .pdf, .svg)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        L = self.matrix.shape[0]
        fig = Figure(figsize=(max(4.0, 0.2 * L + 3), max(3.5, 0.2 * L + 2.5)), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = ax.imshow(self.matrix, cmap="magma", vmin=min(0.0, float(self.matrix.min())), vmax=1.0)
        fig.colorbar(image, ax=ax, label="cosine similarity")
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.set_title(title)
        fig.tight_layout()
        save_figure(fig, path)


@torch.no_grad()
def layer_similarity(model: nn.Module, probes: Sequence[Probe]) -> LayerSimilarity:
    """Cosine similarity of every pair of layer outputs, averaged over the probes' clean prompts."""
    if not probes or not all(isinstance(probe, Probe) for probe in probes):
        raise ScoringError(f"layer_similarity takes a non-empty list of probes (build_probes), got "
                           f"{shown(probes):.100}")
    total = None
    with Runner(model) as runner:
        for probe in probes:
            record = runner.record(probe, keep_qk=False)  # hidden states only
            outs = torch.cat(record.hidden[1:]).float()  # (L, T, d): what each layer writes out
            unit = torch.nn.functional.normalize(outs, dim=-1)
            sim = torch.einsum("itd,jtd->ij", unit, unit) / unit.shape[1]  # (L, L) mean over positions
            total = sim if total is None else total + sim
    return LayerSimilarity((total / len(probes)).cpu().numpy())
