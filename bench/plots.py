"""The benchmark's figures as PNG (matplotlib, Agg backend): throughput and p50/p99 latency of every row of a case."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt

from bench.cases import Sample


def plot_case(title: str, rows: list[tuple[str, Sample]], path: Path) -> None:
    """Two horizontal bar charts side by side: req/s, and p50 and p99 in ms (log scale: they span decades)."""
    labels = [label for label, _ in rows]
    positions = list(range(len(rows)))
    height = max(2.5, 0.45 * len(rows) + 1.2)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), sharey=True, constrained_layout=True)
    rps = [s.rps for _, s in rows]
    bars = left.barh(positions, rps, color="#4c72b0")
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in rps], padding=3, fontsize=8)
    left.set_xlabel("requests/s (median of the runs)")
    left.set_yticks(positions, labels, fontsize=8)
    left.invert_yaxis()
    left.margins(x=0.2)
    width = 0.4
    p50 = right.barh([p - width / 2 for p in positions], [s.p50 for _, s in rows], width, label="p50", color="#55a868")
    p99 = right.barh([p + width / 2 for p in positions], [s.p99 for _, s in rows], width, label="p99", color="#c44e52")
    right.bar_label(p50, labels=[f"{s.p50:.2f}" for _, s in rows], padding=3, fontsize=7)
    right.bar_label(p99, labels=[f"{s.p99:.1f}" for _, s in rows], padding=3, fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("latency, ms (log scale)")
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # outside: clear of the bars
    right.margins(x=0.3)
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
