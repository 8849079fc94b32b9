"""What an evaluation reports: one row of scores per variant, the paper's figures beside them, as a table or JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PAPER", "PAPER_SOURCE", "Report", "Row", "Task"]

Task = Literal["pastis-forecast", "pastis-classify", "eurosat"]
"""The downstream tasks of the PIMC paper that pimc-ray scores."""

#: The paper the figures come from.
PAPER_SOURCE = "Stival, Torres, Pedrini, PIMC, arXiv 2601.04127 (2026)"
#: The PIMC paper's figures (Stival, Torres, Pedrini, arXiv 2601.04127), per task: the scores by column, and what
#: they are. Pixel classification on PASTIS has no figure recorded here (see docs/paper-choices.md).
PAPER: Mapping[Task, tuple[Mapping[str, float], str]] = {
    "pastis-forecast": (
        {"NDVI": 0.4849, "EVI": 0.5464, "SAVI": 0.5387},
        "RMSE of the next 10 index values from 32 observations",
    ),
    "pastis-classify": ({}, "no pixel-classification figure of the paper is recorded in pimc-ray"),
    "eurosat": ({"accuracy": 0.88}, "about 88 % accuracy"),
}


@dataclass(frozen=True)
class Row:
    """The scores of one variant (a baseline, or an encoder as a linear probe or fine-tuned)."""

    variant: str
    """What was scored, e.g. ``pretrained RP encoder, linear probe``."""
    weights: str
    """Where the encoder's weights come from (``-`` for baselines without one)."""
    scores: Mapping[str, float]
    """The report's columns: RMSE per index, or accuracy (and mean IoU)."""
    per_class: Mapping[str, float] = field(default_factory=dict)
    """IoU or accuracy per class name (classification only)."""


@dataclass(frozen=True)
class Report:
    """The result of one evaluation."""

    task: Task
    title: str
    """One line: the task and its protocol."""
    columns: tuple[str, ...]
    """Score names, in table order."""
    unit: Literal["rmse", "percent"]
    """How scores print: RMSE as they are, accuracies and IoU as percentages."""
    rows: tuple[Row, ...]
    data: Mapping[str, Any]
    """What was read: splits, pixel or image counts, patches."""
    settings: Mapping[str, Any]
    """The options the scores depend on (epochs, batch size, seed, device...)."""
    per_class_name: str = ""
    """What :attr:`Row.per_class` holds (``IoU`` or ``accuracy``); empty for regression."""

    @property
    def paper(self) -> tuple[Mapping[str, float], str]:
        """The paper's figures for this task and what they are."""
        return PAPER[self.task]

    def _fmt(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "—"
        return f"{100 * value:.1f}" if self.unit == "percent" else f"{value:.4f}"

    def table(self) -> str:
        """The report as text: the title, what was read, then one line per variant with the paper's first."""
        figures, what = self.paper
        width = max(len(r.variant) for r in self.rows) if self.rows else 10
        width = max(width, len("paper (PIMC)"))
        unit = " (%)" if self.unit == "percent" else ""
        lines = [self.title, *(f"  {k}: {v}" for k, v in self.data.items() if not isinstance(v, dict))]
        lines += [f"  {k}: {_inline(v)}" for k, v in self.data.items() if isinstance(v, dict)]
        head = "  " + "variant".ljust(width) + "".join(f"{c + unit:>14}" for c in self.columns) + "  weights"
        lines += ["", head]
        paper = "".join(f"{self._fmt(figures.get(c)):>14}" for c in self.columns)
        lines.append("  " + "paper (PIMC)".ljust(width) + paper + f"  {what}")
        for row in self.rows:
            scores = "".join(f"{self._fmt(row.scores.get(c)):>14}" for c in self.columns)
            lines.append("  " + row.variant.ljust(width) + scores + f"  {row.weights}")
        classes = [name for row in self.rows for name in row.per_class]
        if classes:
            names = list(dict.fromkeys(classes))
            rows = [r for r in self.rows if r.per_class]
            cw = max(len(n) for n in names)
            lines += [
                "",
                f"  {self.per_class_name} per class{unit}, one column per variant above (in order):",
            ]
            lines.append("  " + "class".ljust(cw) + "".join(f"{i + 1:>8}" for i in range(len(rows))))
            for name in names:
                lines.append(
                    "  " + name.ljust(cw) + "".join(f"{self._fmt(r.per_class.get(name)):>8}" for r in rows)
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        figures, what = self.paper
        return {
            "task": self.task,
            "title": self.title,
            "columns": list(self.columns),
            "unit": "fraction" if self.unit == "percent" else "rmse",
            "paper": {"scores": dict(figures), "what": what, "source": PAPER_SOURCE},
            "results": [self._row_dict(r) for r in self.rows],
            "data": dict(self.data),
            "settings": dict(self.settings),
        }

    def _row_dict(self, row: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": row.variant,
            "weights": row.weights,
            "scores": {k: _json_float(v) for k, v in row.scores.items()},
        }
        if row.per_class:
            out[f"{self.per_class_name}_per_class"] = {k: _json_float(v) for k, v in row.per_class.items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _json_float(value: float) -> float | None:
    """NaN (a class absent from the test set) as JSON null."""
    return float(value) if math.isfinite(value) else None


def _inline(value: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items())
