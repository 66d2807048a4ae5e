"""Results of a benchmark run: one row per measured line, a Markdown table and a JSON file."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the table: a case in one cache mode, its measure against its baseline and target."""

    case: str
    title: str
    mode: str
    measure: str
    gateway: str
    baseline: str = ""
    comparison: str = ""
    peer: str = ""  # gateway against the seed's Node design, measured in the same rounds
    target: str = ""
    met: bool | None = None
    problems: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    """Return the median of ``values`` (0 for none)."""
    return float(statistics.median(values)) if values else 0.0


def fmt_rps(value: float) -> str:
    """Format a throughput: thousands separated, no decimals."""
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    """Format a latency in milliseconds with a precision that fits its size."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_delta_ms(value: float) -> str:
    """Format a latency difference with its sign."""
    return f"{'+' if value >= 0 else '−'}{fmt_ms(abs(value))} ms"


def verdict(row: Row) -> str:
    """Return the table cell that says whether the row met its target (and whether it saw problems)."""
    if row.problems:
        return "**ERRORS**"
    return {True: "yes", False: "**no**", None: "—"}[row.met]


def markdown(rows: Sequence[Row], context: dict[str, Any]) -> str:
    """Render the rows as a Markdown table, preceded by how the run was made."""
    lines = [
        f"Run {context['started']} · {context['cpus']} CPUs · gateway {context['workers']} workers "
        f"(`{context.get('worker_class') or '?'}`) · {context['rounds']} round(s) of {context['seconds']} s "
        f"per case, alternating with the baseline, medians · wrk {context['wrk_threads']} · "
        f"request log: {context['request_log']}",
        "",
        "| # | case | cache | measure | gateway | baseline | comparison | vs seed (Node) | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    modes = {mode: index for index, mode in enumerate(context.get("modes", []))}
    ordered = sorted(rows, key=lambda r: (not r.case.isdigit(), r.case, modes.get(r.mode, len(modes))))
    for row in ordered:
        lines.append(f"| {row.case} | {row.title} | {row.mode} | {row.measure} | {row.gateway} | {row.baseline} "
                     f"| {row.comparison} | {row.peer or '—'} | {row.target} | {verdict(row)} |")
    if context.get("peer_skipped"):
        lines += ["", f"vs seed (Node): skipped: {context['peer_skipped']}"]
    problems = [(row, p) for row in ordered for p in row.problems]
    if problems:
        lines += ["", "Problems:"]
        lines += [f"- case {row.case} ({row.mode}): {p}" for row, p in problems]
    return "\n".join(lines) + "\n"


def write_json(rows: Sequence[Row], context: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write the run's rows and context to ``directory/bench-<UTC time>.json`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps({"context": context, "rows": [asdict(row) for row in rows]}, indent=2) + "\n")
    return path
