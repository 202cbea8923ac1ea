"""Draw an evaluation: the confusion matrix (or the top confusions, past 12 routes), the confidence
threshold sweep and the reliability diagram (matplotlib, Agg)."""

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
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    if len(names) <= 12:
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
    else:
        top = rep.top_confusions[:12][::-1]
        ax1.barh(range(len(top)), [x["count"] for x in top])
        ax1.set_yticks(range(len(top)), [f"{x['label']} -> {x['routed']}" for x in top])
        ax1.set_xlabel("rows")
        ax1.set_title(f"top confusions — accuracy {rep.accuracy:.3f}, macro-F1 {rep.macro_f1:.3f}")
    th = [s["threshold"] for s in rep.sweep]
    ax2.plot(th, [s["accuracy"] for s in rep.sweep], label="accuracy (below threshold -> fallback)")
    ax2.plot(th, [s["coverage"] for s in rep.sweep], label="coverage (decided by the router)", linestyle="--")
    ax2.set_xlabel("confidence threshold")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower left")
    ax2.set_title("threshold sweep")
    rel = rep.reliability
    ax3.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    ax3.plot([b["confidence"] for b in rel], [b["accuracy"] for b in rel], marker="o", label="answered rows")
    for b in rel:
        ax3.annotate(str(b["n"]), (b["confidence"], b["accuracy"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax3.set_xlim(0, 1.02)
    ax3.set_ylim(0, 1.02)
    ax3.set_xlabel("confidence")
    ax3.set_ylabel("accuracy")
    ax3.grid(alpha=0.3)
    ax3.legend(loc="upper left")
    ax3.set_title(f"reliability — calibration error {rep.calibration_error:.3f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
