"""The performance goals against what the last `make bench` measured, as one table.

    .venv/bin/python -m bench.summary [bench/.cache/out]

`make bench` keeps each benchmark's output in `bench/.cache/out/<name>.txt`; this reads the
figure lines they print (the same lines docs/BENCHMARKS.md quotes) and says, for each goal,
what was measured and whether it was met. A goal whose benchmark did not run, or whose line is
missing, is said to be not measured, never guessed.
"""

from __future__ import annotations

import argparse
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OUTPUT_DIR = Path(__file__).resolve().parent / ".cache" / "out"
_NUMBER = r"(\d+(?:\.\d+)?)"


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "≥": operator.ge,
    "≤": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Goal:
    name: str
    # the benchmark whose output holds the figure (bench/.cache/out/<bench>.txt)
    bench: str
    # the figure: group 1 of this pattern, in the first line that matches
    pattern: str
    unit: str
    # "≥", "≤" or "<", then the target: the figure must be that
    comparison: str
    target: float

    def wanted(self) -> str:
        return f"{self.comparison} {self.target:g}{self.unit}"

    def met(self, figure: float) -> bool:
        return _COMPARISONS[self.comparison](figure, self.target)


GOALS = (
    Goal("100 camera photos processed", "pipeline", rf"100 photos in {_NUMBER} s", " s", "≤", 30),
    Goal(
        "pipeline / engine limit",
        "pipeline",
        rf"pipeline / engine limit: {_NUMBER}%",
        " %",
        "≥",
        90,
    ),
    Goal(
        "first match after the first upload",
        "pipeline",
        rf"first match: {_NUMBER} s",
        " s",
        "<",
        2,
    ),
    Goal(
        "/api/my-photos cached / bare route",
        "lists",
        rf"/api/my-photos cached throughput / bare route: {_NUMBER}%",
        " %",
        "≥",
        50,
    ),
    Goal(
        "/api/all-photos cached / bare route",
        "lists",
        rf"/api/all-photos cached throughput / bare route: {_NUMBER}%",
        " %",
        "≥",
        50,
    ),
    Goal(
        "/api/my-photos uncached p50",
        "lists",
        rf"/api/my-photos uncached\s+p50\s+{_NUMBER} ms",
        " ms",
        "<",
        10,
    ),
    Goal(
        "reads during a storm of uploads p99",
        "lists",
        rf"during the storm\s+p50\s+[\d.]+ ms\s+p99\s+{_NUMBER} ms",
        " ms",
        "<",
        25,
    ),
    Goal(
        "uploads / storage limit, 1 request",
        "uploads",
        rf"uploads / storage limit: {_NUMBER}% \(1 request\)",
        " %",
        "≥",
        50,
    ),
    Goal(
        "uploads / storage limit, 10 requests",
        "uploads",
        rf"uploads / storage limit: {_NUMBER}% \(10 requests\)",
        " %",
        "≥",
        50,
    ),
)


def measured(goal: Goal, outputs: Path) -> float | None:
    """The goal's figure in its benchmark's kept output, or None if it is not there."""
    path = outputs / f"{goal.bench}.txt"
    if not path.is_file():
        return None
    found = re.search(goal.pattern, path.read_text(errors="replace"))
    return None if found is None else float(found.group(1))


def summary(outputs: Path) -> list[str]:
    """The table's lines: goal, wanted, measured, verdict."""
    rows = [("goal", "wanted", "measured", "")]
    for goal in GOALS:
        figure = measured(goal, outputs)
        if figure is None:
            rows.append((goal.name, goal.wanted(), "-", f"not measured (bench.{goal.bench})"))
        else:
            verdict = "met" if goal.met(figure) else "missed"
            rows.append((goal.name, goal.wanted(), f"{figure:g}{goal.unit}", verdict))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="?", type=Path, default=OUTPUT_DIR)
    args = parser.parse_args()
    print("\n".join(summary(args.outputs)))


if __name__ == "__main__":
    main()
