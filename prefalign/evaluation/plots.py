"""The plots of evaluation reports (matplotlib, rendered to PNG and embedded in the HTML as base64)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def embed(fig: plt.Figure) -> str:
    """An <img> tag holding the figure; the figure is closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def reward_distributions(rewards: dict[str, list[float]], xlabel: str = "reward", ylabel: str = "responses") -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = [v for v in rewards.values() if v]
    bins = np.histogram_bin_edges(np.concatenate(values), bins=30) if values else 30
    for name, v in rewards.items():
        ax.hist(v, bins=bins, alpha=0.45, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return embed(fig)


def length_vs_reward(points: dict[str, tuple[list[int], list[float]]]) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, (lengths, rewards) in points.items():
        ax.scatter(lengths, rewards, s=8, alpha=0.5, label=name)
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("reward")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return embed(fig)


def reward_kl_frontier(points: list[tuple[str, float, float]]) -> str:
    """(name, KL, mean reward) per policy; checkpoints of one run (`run@step-N`) are joined by a line."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    runs: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for name, kl, reward in points:
        runs[name.split("@")[0]].append((kl, reward, name))
    for run, pts in runs.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run)
    labels = [(kl, reward, point_label(name)) for pts in runs.values() for kl, reward, name in pts]
    for (kl, reward, text), offset in zip(labels, label_offsets([(kl, reward) for kl, reward, _ in labels])):
        ax.annotate(text, (kl, reward), fontsize=7, textcoords="offset points", xytext=offset)
    ax.margins(x=0.3, y=0.15)  # room inside the frame for the labels, which run right of their points
    kls = [kl for kl, _, _ in labels]
    if kls:  # but no empty room left of the smallest KL (a KL is never far below 0)
        ax.set_xlim(min(kls) - 0.05 * ((max(kls) - min(kls)) or 1.0), ax.get_xlim()[1])
    ax.set_xlabel("KL(policy || reference), nats per response")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return embed(fig)


def label_offsets(points: list[tuple[float, float]], near: tuple[float, float] = (0.25, 0.08)) -> list[tuple[int, int]]:
    """Text offsets (points) for labels at `points`: a label whose point lies within `near` (fractions of each
    axis' range; wider in x, where a label runs) of an earlier one's goes one line lower per such neighbour, so
    labels of close points do not overlap."""
    xy = np.asarray(points, dtype=float).reshape(-1, 2)
    span = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    unit = (xy - xy.min(axis=0)) / np.where(span > 0, span, 1.0) if len(xy) else xy
    offsets = []
    for i, p in enumerate(unit):
        crowd = int(sum(np.all(np.abs(unit[j] - p) < near) for j in range(i)))
        offsets.append((3, 3 - 9 * crowd))
    return offsets


def point_label(name: str) -> str:
    """`dpo@step-00000006` -> `step 6`; a name without a checkpoint stays as it is."""
    step = name.split("@")[-1]
    if "@" in name and step.startswith("step-") and step[5:].isdigit():
        return f"step {int(step[5:])}"
    return step


def reliability_diagram(margins: list[float], n_bins: int = 10) -> str:
    """Calibration of p = s(r_w - r_l): per bin of confidence max(p, 1 - p), how often the more likely
    response was the chosen one (the bins of `rewards.metrics.expected_calibration_error`)."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=float)))
    confidence, correct = np.maximum(p, 1 - p), (p > 0.5) + 0.5 * (p == 0.5)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    points = [(confidence[which == b].mean(), correct[which == b].mean()) for b in range(n_bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0.5, 1], [0.5, 1], ls="--", color="grey", label="calibrated")
    if points:
        ax.plot(*zip(*points), marker="o", label="reward model")
    ax.set_xlabel("confidence max(p, 1 - p)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return embed(fig)


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
