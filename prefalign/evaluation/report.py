"""A self-contained HTML report: a summary table, sections of plots and tables, training curves.
`run_report` builds one for any run folder (`prefalign report RUN`)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt

from prefalign.atomic_files import write_text_atomic
from prefalign.evaluation.plots import embed

# (panel title, metrics on the left axis, metrics on a right axis of their own)
CURVES = [("Loss", ("loss", "eval/loss"), ()),
          ("Reward margin (chosen - rejected)", ("rewards/margins", "eval/rewards/margins"), ()),
          ("Preference accuracy", ("rewards/accuracies", "eval/rewards/accuracies", "accuracy", "eval/accuracy"), ()),
          ("Implicit rewards", ("rewards/chosen", "rewards/rejected"), ()),
          ("Log-probs of the completions", ("logps/chosen", "logps/rejected"), ()),
          ("Gradient norm and learning rate", ("grad_norm",), ("lr",)),
          ("Throughput", ("tokens_per_s",), ())]

# Readable names for the keys summaries and metrics use; other keys have their separators spaced out.
NAMES = {"rewards/accuracies": "reward accuracy", "rewards/margins": "reward margin", "rewards/chosen": "reward (chosen)",
         "rewards/rejected": "reward (rejected)", "logps/chosen": "log-prob (chosen)", "logps/rejected":
         "log-prob (rejected)", "grad_norm": "gradient norm", "lr": "learning rate", "kl": "KL to the base",
         "lc_win_rate": "length-controlled win rate", "win_rate_ci95": "win rate, 95% interval",
         "tokens_per_s": "tokens/s", "time/batches": "seconds making batches", "time/train": "seconds training"}


def readable(key: str) -> str:
    """`final_eval.eval/rewards/accuracies` -> `final eval: eval reward accuracy`."""
    out = []
    for part in key.split("."):
        name = part.removeprefix("eval/")
        name = NAMES.get(name, name.replace("_", " ").replace("/", " "))
        out.append(("eval " if part.startswith("eval/") else "") + name)
    return ": ".join(out)


def rounded(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(rounded(v) for v in value) + "]"
    return "n/a" if value is None else str(value)


def _plot(ax: plt.Axes, metrics: list[dict], keys: tuple[str, ...], style: str = "-") -> list:
    lines = []
    for key in keys:
        points = [(m["step"], m[key]) for m in metrics if key in m]
        if points:
            xs, ys = zip(*points)
            lines += ax.plot(xs, ys, style, marker="o" if len(points) < 20 else None, label=readable(key))
    return lines


def _curve(metrics: list[dict], title: str, left: tuple[str, ...], right: tuple[str, ...]) -> str | None:
    if not any(k in m for m in metrics for k in left + right):
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    lines = _plot(ax, metrics, left)
    if right:  # a scale of its own: lr (1e-6) next to a gradient norm (1) would be a flat line at 0
        twin = ax.twinx()
        twin.set_prop_cycle(color=["tab:red", "tab:purple"])
        lines += _plot(twin, metrics, right, "--")
        twin.set_ylabel(", ".join(readable(k) for k in right))
        twin.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend(lines, [x.get_label() for x in lines], fontsize=8)
    ax.grid(alpha=0.3)
    return embed(fig)


def _rows(summary: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in summary.items():
        if isinstance(v, dict) and v:
            rows += _rows(v, f"{prefix}{k}.")
        elif not isinstance(v, dict):
            rows.append((readable(prefix + k), rounded(v)))
    return rows


def write_report(path: Path, title: str, summary: dict, metrics: list[dict] = (),
                 sections: list[tuple[str, str]] = ()) -> Path:
    """`sections`: (heading, HTML body) pairs, e.g. plots from `evaluation.plots` and their tables."""
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _rows(summary))
    body = "".join(f"<h2>{html.escape(h)}</h2>{content}" for h, content in sections)
    curves = "".join(img for spec in CURVES if (img := _curve(list(metrics), *spec)))
    if curves:
        body += f"<h2>Training curves</h2>{curves}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 12px;border-bottom:1px solid #ddd;
vertical-align:top;text-align:left}}img{{margin:6px;border:1px solid #eee}}</style></head><body>
<h1>{html.escape(title)}</h1><h2>Summary</h2><table>{table}</table>{body}</body></html>"""
    write_text_atomic(Path(path), page)
    return Path(path)


def run_report(run_dir: Path) -> Path:
    """`run_dir/report.html` from what any run folder holds: its config (model, losses, steps), summary.json
    where the recipe wrote one, the last logged metrics, and the training curves of metrics.jsonl."""
    from prefalign.training.metrics import read_metrics
    from prefalign.training.run_folder import run_config

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} holds no metrics.jsonl: not a run folder, or a run that never stepped")
    metrics = read_metrics(run_dir)
    config = run_config(run_dir)
    summary: dict = {"model": config.get("model", {}).get("name_or_path"), "steps": metrics[-1]["step"] if metrics else 0}
    if config.get("loss"):
        summary["loss"] = ", ".join(str(t.get("name")) for t in config["loss"])
    if (run_dir / "summary.json").exists():
        summary |= json.loads((run_dir / "summary.json").read_text())
    summary["last step"] = {k: v for k, v in (metrics[-1] if metrics else {}).items() if k != "step"}
    return write_report(run_dir / "report.html", f"prefalign run: {run_dir.name}", summary, metrics)
