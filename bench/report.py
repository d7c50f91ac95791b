"""The benchmark's outputs: a markdown table, a one-line summary for CI logs, and a figure of the day.

Kept apart from the scoring so the numbers can be tested without matplotlib and the presentation
changed without touching a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from os import PathLike

from bench.score import MeanScore, Oracle, Run, Score, miss_rate, reversals, schedule_actions

COLUMNS = ("policy", "cost ÷ lower bound", "avoidable violation min", "changes", "reversals", "misses")
ORACLE_NAME = "oracle (lower bound)"
CHURN_NAME = "churn-aware oracle"
NOT_APPLICABLE = "—"


def _count(value: int | float) -> str:
    """A count as an int; a mean of counts with one decimal, so averages never pass for single runs."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}"


def table(scores: Sequence[Score | MeanScore], oracle_rows: bool = True, oracle: Oracle | None = None) -> str:
    """A GitHub-markdown table, one row per score, then the oracle rows when ``oracle`` is given.

    The oracle rows are the yardsticks: the lower bound (1.00 by definition) and the churn-aware
    schedule. Their misses are not known here (that would need the fixed pools), hence a dash.
    """
    rows: list[tuple[str, ...]] = [
        (
            s.name,
            _ratio(s.cost_ratio),
            _count(s.avoidable_violation_min),
            _count(s.changes),
            _count(s.reversals),
            _count(s.misses),
        )
        for s in scores
    ]
    if oracle_rows and oracle is not None:
        bound = oracle.lower_bound
        effective = oracle.effective_sizes
        rows.append(
            (
                ORACLE_NAME,
                _ratio(1.0),
                "0",
                str(oracle.changes),
                str(reversals(schedule_actions(effective))),
                NOT_APPLICABLE,
            )
        )
        rows.append(
            (
                CHURN_NAME,
                _ratio(oracle.churn_cost / bound if bound else 1.0),
                "0",
                str(oracle.churn_changes),
                str(reversals(schedule_actions(oracle.churn_sizes))),
                NOT_APPLICABLE,
            )
        )
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _escape(cell: str) -> str:
    """A policy name with a pipe in it must not split the row."""
    return cell.replace("|", "\\|")


def last_line(score: Score | MeanScore) -> str:
    """The single line CI greps for; its format is a contract, so it never wraps or gains fields."""
    return (
        f"bench: cost_ratio={_ratio(score.cost_ratio)}"
        f" avoidable_violation_min={_count(score.avoidable_violation_min)}"
        f" actions={_count(score.changes)}"
        f" reversals={_count(score.reversals)}"
    )


def _spans(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous runs of minute indices as half-open ``(start, end)`` pairs, for shading."""
    spans: list[tuple[int, int]] = []
    for m in sorted(set(minutes)):
        if spans and spans[-1][1] == m:
            spans[-1] = (spans[-1][0], m + 1)
        else:
            spans.append((m, m + 1))
    return spans


def figure(
    path: str | PathLike[str],
    runs: Mapping[str, Run],
    oracle: Oracle,
    fixed: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    max_miss_rate: float = 0.10,
    title: str = "",
    gap_minutes: Iterable[int] = (),
    clock: Callable[[int], float] | None = None,
) -> None:
    """Write a 1600×900 PNG: pool size against the oracle (top) and miss rate against the threshold.

    ``clock`` maps a scored-minute index to its x position in hours (default ``m / 60``, i.e.
    hours 0..24 of the scored day); it must be increasing. ``fixed``, when given, adds the miss
    rate the oracle-size pool saw, so a policy's excess misses read as the gap between the lines.
    Unavoidable minutes are shaded red, the metrics gap grey.

    Built on ``matplotlib.figure.Figure`` with the Agg canvas rather than pyplot: no global state,
    no display, safe to call from tests in parallel; the PNG carries no software/time metadata,
    so the same data gives the same bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MultipleLocator, PercentFormatter

    minutes = len(oracle.sizes)
    to_hours = clock if clock is not None else (lambda m: m / 60)
    edges = [to_hours(m) for m in range(minutes + 1)]

    fig = Figure(figsize=(16, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    size_ax, rate_ax = fig.subplots(2, 1, sharex=True)

    unavoidable = [m for m, s in enumerate(oracle.sizes) if s is None]
    for ax in (size_ax, rate_ax):
        for i, (start, end) in enumerate(_spans(unavoidable)):
            ax.axvspan(
                edges[start],
                edges[end],
                color="tab:red",
                alpha=0.12,
                linewidth=0,
                label="unavoidable (no size meets threshold)" if i == 0 else None,
            )
        for i, (start, end) in enumerate(_spans(m for m in gap_minutes if 0 <= m < minutes)):
            ax.axvspan(
                edges[start],
                edges[min(end, minutes)],
                color="0.5",
                alpha=0.25,
                linewidth=0,
                label="metrics gap" if i == 0 else None,
            )

    if minutes:
        size_ax.stairs(
            oracle.effective_sizes, edges, color="black", linewidth=1.4, label="oracle size", baseline=None
        )
        size_ax.stairs(
            oracle.churn_sizes,
            edges,
            color="black",
            linewidth=1.4,
            linestyle="--",
            label="churn-aware oracle",
            baseline=None,
        )
    rate_ceiling = 2 * max_miss_rate
    for name, run in runs.items():
        if len(run.sizes) != minutes:
            raise ValueError(f"run {name!r} has {len(run.sizes)} minutes, the oracle {minutes}")
        if not minutes:
            continue
        line = size_ax.stairs(run.sizes, edges, linewidth=1.6, label=name, baseline=None)
        rates = [miss_rate(g, x) for g, x in zip(run.gets, run.misses, strict=True)]
        rate_ceiling = max(rate_ceiling, max(rates))
        rate_ax.stairs(rates, edges, linewidth=1.0, color=line.get_edgecolor(), label=name, baseline=None)
    if fixed is not None and minutes:
        seen = [miss_rate(*fixed[s][m]) for m, s in enumerate(oracle.effective_sizes)]
        rate_ax.stairs(seen, edges, color="0.35", linewidth=0.8, label="oracle-size pool", baseline=None)
    rate_ax.axhline(
        max_miss_rate,
        color="tab:red",
        linestyle=":",
        linewidth=1.4,
        label=f"max miss rate {max_miss_rate:.0%}",
    )

    size_ax.set_ylabel("pool size (billed nodes)")
    size_ax.set_ylim(0, oracle.max_size + 0.5)
    size_ax.yaxis.set_major_locator(MultipleLocator(1))
    rate_ax.set_ylabel("miss rate")
    rate_ax.set_ylim(0, min(1.0, rate_ceiling * 1.05))
    rate_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    rate_ax.set_xlabel("hour of day")
    rate_ax.set_xlim(edges[0], edges[-1] if minutes else edges[0] + 24)
    rate_ax.xaxis.set_major_locator(MultipleLocator(2))
    for ax in (size_ax, rate_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9, ncols=3, framealpha=0.85)
    if title:
        fig.suptitle(title, fontsize=14)
    fig.savefig(path, format="png", metadata={"Software": None})
