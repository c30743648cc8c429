"""What a person sees of a run: metrics as JSON lines, loss and perplexity curves, the closing summary."""
from __future__ import annotations

import json
import math
import os

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOSS_PLOT = "loss.png"
PERPLEXITY_PLOT = "perplexity.png"


class MetricsLog:
    """`OUT/metrics.jsonl`: one record per logging step ({"step", "loss", "learning_rate", "tokens_per_second"})
    and one per evaluation ({"step", "eval_<name>": value, ...})."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, METRICS_FILE)

    def append(self, record: dict) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as file:
            return [json.loads(line) for line in file if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Forget what a killed run logged after the checkpoint it resumes from."""
        kept = [record for record in self.records() if record["step"] <= step]
        with open(self.path, "w") as file:
            file.writelines(json.dumps(record) + "\n" for record in kept)


def plot_curves(records: list[dict], out_dir: str) -> list[str]:
    """Write the loss and perplexity curves as PNG; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    train = [record for record in records if "loss" in record]
    evals = [record for record in records if any(name.startswith("eval_") for name in record)]
    eval_names = sorted({name for record in evals for name in record if name.startswith("eval_")})
    curves = {
        LOSS_PLOT: ("loss", [("train loss", train, lambda record: record["loss"])]
                    + _eval_curves(evals, [name for name in eval_names if name.endswith("loss")])),
        PERPLEXITY_PLOT: ("perplexity", [("exp(train loss)", train, lambda record: _exp(record["loss"]))]
                          + _eval_curves(evals, [name for name in eval_names if "perplexity" in name])),
    }
    paths = []
    for file_name, (y_label, lines) in curves.items():
        figure, axes = pyplot.subplots(figsize=(6, 4))
        for label, points, value in lines:
            axes.plot([record["step"] for record in points], [value(record) for record in points],
                      marker="o" if len(points) < 20 else None, label=label)
        axes.set_xlabel("optimizer step")
        axes.set_ylabel(y_label)
        if y_label == "perplexity":
            axes.set_yscale("log")
        axes.legend()
        figure.tight_layout()
        paths.append(os.path.join(out_dir, file_name))
        figure.savefig(paths[-1], dpi=100)
        pyplot.close(figure)
    return paths


def _eval_curves(evals, names):
    return [(name, [record for record in evals if name in record], lambda record, name=name: record[name])
            for name in names]


def _exp(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # beyond e^700 a float overflows


def write_summary(summary: dict, out_dir: str) -> None:
    with open(os.path.join(out_dir, SUMMARY_FILE), "w") as file:
        json.dump(summary, file, indent=2)


def format_summary(summary: dict) -> str:
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in summary["metrics"].items())
    lines = [f"Trained {summary['steps']} steps in {summary['seconds']:.1f} s; final training loss "
             f"{summary['train_loss']:.4f}."]
    if metrics:
        lines.append(f"Evaluation: {metrics}.")
    lines.append(f"Model saved to {summary['model_dir']}")
    return "\n".join(lines)
