"""The benchmark's two plots (matplotlib, headless): Recall@1 against noise, and
the detectors' precision-recall curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from noisyclean.bench.noise import NoiseSpec
from noisyclean.bench.report import _mean
from noisyclean.losses import LOSSES


def write_plots(
    summary: pd.DataFrame,
    noises: Sequence[NoiseSpec],
    curve_tags: Sequence[str],
    scores_dir: Path,
    out_dir: Path,
) -> None:
    """Write ``recall_vs_noise.png`` and, when there are scores, ``precision_recall.png``.

    Args:
        summary: the runner's summary (noise, method, figure, mean, std, n).
        noises: the noise settings, in the summary's ``noise`` column as ``str(noise)``.
        curve_tags: per noise setting, the tag of the run whose detector scores its
            precision-recall panel draws.
        scores_dir: the detectors' scores, ``<method>__<tag>.npz`` with ``scores`` and
            ``wrong``, each of shape ``(N_train,)``.
        out_dir: where the PNGs go.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Recall@1 of each loss against the noise rate: a colour per loss, a marker per
    # noise kind (a line joins one kind's rates), the legend beside the axes.
    fig, ax = plt.subplots(figsize=(7.5, 4))
    kinds = sorted({n.kind for n in noises})
    markers = dict(zip(kinds, "osD^vP*X", strict=False))
    losses = (*LOSSES, "proxy-anchor-clean")
    colours = {loss: f"C{i}" for i, loss in enumerate(losses)}
    for loss in losses:
        for kind in kinds:
            pts = sorted(
                (n.rate, _mean(summary, str(n), loss, "recall@1")) for n in noises if n.kind == kind
            )
            pts = [(r, v) for r, v in pts if not np.isnan(v)]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [100 * p[1] for p in pts],
                    marker=markers[kind],
                    color=colours[loss],
                    alpha=0.85,
                )
    from matplotlib.lines import Line2D

    by_loss = [Line2D([], [], color=colours[x], label=x) for x in losses]
    by_kind = [
        Line2D([], [], color="grey", marker=markers[k], linestyle="", label=k) for k in kinds
    ]
    ax.legend(handles=by_loss + by_kind, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xlabel("noise rate")
    ax.set_ylabel("Recall@1 on clean test rows (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "recall_vs_noise.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    # Precision-recall curves of the detectors, one panel per noise setting.
    curves = sorted(scores_dir.glob("*.npz")) if scores_dir.exists() else []
    if not curves:
        return
    fig, axes = plt.subplots(1, len(noises), figsize=(5 * len(noises), 4), squeeze=False)
    for ax, noise, want in zip(axes[0], noises, curve_tags, strict=True):
        for path in curves:
            method, _, tag = path.stem.partition("__")
            if tag != want:
                continue
            with np.load(path) as z:
                scores, wrong = z["scores"], z["wrong"].astype(bool)
            order = np.argsort(-scores, kind="mergesort")
            tp = np.cumsum(wrong[order])
            ax.plot(tp / max(wrong.sum(), 1), tp / np.arange(1, len(tp) + 1), label=method)
        ax.set_title(str(noise))
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "precision_recall.png", dpi=120)
    plt.close(fig)
