"""Draw an evaluation: the confusion matrix and the confidence-threshold sweep (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._errors import ConfigError


def plot_report(rep: Any, path: str | Path, *, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'turnout[plot]'") from None
    import numpy as np

    labels = rep.labels
    keep = [i for i, row in enumerate(rep.confusion) if any(row) or any(r[i] for r in rep.confusion)]
    m = np.asarray(rep.confusion)[np.ix_(keep, keep)]
    names = [labels[i] for i in keep]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    ax1.imshow(m, cmap="Blues")
    ax1.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax1.set_yticks(range(len(names)), names)
    ax1.set_xlabel("routed to")
    ax1.set_ylabel("true label")
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax1.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    ax1.set_title(f"confusion matrix — accuracy {rep.accuracy:.3f}, macro-F1 {rep.macro_f1:.3f}")
    th = [s["threshold"] for s in rep.sweep]
    ax2.plot(th, [s["accuracy"] for s in rep.sweep], label="accuracy (below threshold -> fallback)")
    ax2.plot(th, [s["coverage"] for s in rep.sweep], label="coverage (decided by the router)", linestyle="--")
    ax2.set_xlabel("confidence threshold")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower left")
    ax2.set_title("threshold sweep")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
