"""The report every toolchain command ends with: ``SLOT-report.md`` and its plot ``SLOT-report.png``.

The plot has one panel per kind of figure given: float against int8 scores (one point per box,
crop or caption of the held-out frames: on the diagonal, int8 says what float says), bars (per
label accuracy, per-class counts or AP, BLEU, float and int8 side by side) and curves (the
training and validation loss per epoch). The Markdown gives the same numbers as tables, the
conversion's summary and examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.convert.slots import Agreement

Pairs = list[tuple[float, float]]


@dataclass
class Figures:
    title: str
    summary: list[str] = field(default_factory=list)  # lines of text, the conversion's summary first
    pairs: Pairs = field(default_factory=list)  # (float, int8) scores of the same thing
    pairs_label: str = "score"
    bars: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # chart -> series -> name -> value
    curves: dict[str, list[float]] = field(default_factory=dict)  # name -> value per epoch
    tables: list[str] = field(default_factory=list)  # further Markdown sections (examples)


def _bars_table(title: str, series: Mapping[str, Mapping[str, float]]) -> str:
    names = list(dict.fromkeys(name for values in series.values() for name in values))
    head = f"| {title} | " + " | ".join(series) + " |\n| --- |" + " --- |" * len(series) + "\n"
    rows = "".join(
        f"| {name} | " + " | ".join(f"{values.get(name, float('nan')):.3f}" for values in series.values()) + " |\n"
        for name in names
    )
    return head + rows


def _pairs_line(pairs: Pairs, label: str) -> str:
    if not pairs:
        return ""
    differences = [abs(a - b) for a, b in pairs]
    return (
        f"Float against int8, {label}: {len(pairs)} pairs, mean difference {sum(differences) / len(pairs):.4f}, "
        f"largest {max(differences):.4f}."
    )


def markdown(figures: Figures, plot: str) -> str:
    parts = [f"# {figures.title}", "\n".join(figures.summary)]
    parts.append(_pairs_line(figures.pairs, figures.pairs_label))
    parts += [_bars_table(title, series) for title, series in figures.bars.items()]
    if figures.curves:
        epochs = max(len(values) for values in figures.curves.values())
        head = "| epoch | " + " | ".join(figures.curves) + " |\n| --- |" + " --- |" * len(figures.curves) + "\n"
        rows = "".join(
            f"| {e + 1} | " + " | ".join(f"{v[e]:.4f}" if e < len(v) else "" for v in figures.curves.values()) + " |\n"
            for e in range(epochs)
        )
        parts.append(head + rows)
    parts += figures.tables
    parts.append(f"![float and int8]({plot})")
    return "\n\n".join(part.strip() for part in parts if part.strip()) + "\n"


def _plot(figures: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    from matplotlib import pyplot

    panels = int(bool(figures.pairs)) + len(figures.bars) + int(bool(figures.curves))
    figure, axes = pyplot.subplots(1, max(panels, 1), figsize=(5 * max(panels, 1), 4.2), squeeze=False)
    panel = iter(axes[0])
    if figures.pairs:
        ax = next(panel)
        xs, ys = zip(*figures.pairs, strict=True)
        low, high = min(*xs, *ys), max(*xs, *ys)
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.scatter(xs, ys, s=8, alpha=0.6)
        ax.set(xlabel=f"float {figures.pairs_label}", ylabel=f"int8 {figures.pairs_label}", title="float vs int8")
    for title, series in figures.bars.items():
        ax = next(panel)
        names = list(dict.fromkeys(name for values in series.values() for name in values))
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series.items()):
            ax.bar([n + i * width for n in range(len(names))], [values.get(k, 0.0) for k in names], width, label=label)
        ax.set_xticks([n + width * (len(series) - 1) / 2 for n in range(len(names))], names, rotation=30, ha="right")
        ax.set(title=title)
        ax.legend()
    if figures.curves:
        ax = next(panel)
        for label, curve in figures.curves.items():
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=label)
        ax.set(xlabel="epoch", title="training")
        ax.legend()
    figure.suptitle(figures.title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def write_report(folder: Path, slot: str, figures: Figures) -> tuple[Path, Path]:
    """Write ``folder/SLOT-report.md`` and ``folder/SLOT-report.png``; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    text, image = folder / f"{slot}-report.md", folder / f"{slot}-report.png"
    _plot(figures, image)
    text.write_text(markdown(figures, image.name), encoding="utf-8")
    return text, image


def examples_table(title: str, rows: Sequence[Mapping[str, str]]) -> str:
    """A Markdown table of example rows (for instance reference, float and int8 captions)."""
    if not rows:
        return ""
    keys = list(rows[0])
    head = f"**{title}**\n\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys) + "\n"
    return head + "".join("| " + " | ".join(row.get(k, "").replace("|", "/") for k in keys) + " |\n" for row in rows)


def conversion_figures(slot: str, command: str, agreement: Agreement) -> Figures:
    """What every conversion reports: how int8 follows float on the held-out frames."""
    metrics = agreement.metrics
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    table = "| held-out check | value |\n| --- | --- |\n" + "".join(
        f"| {k} | {v:.4g} |\n" if isinstance(v, float) else f"| {k} | {v} |\n" for k, v in scalars.items()
    )
    return Figures(
        title=f"{slot}: float and int8",
        summary=[f"Made by `{command}`.", "", agreement.summary],
        pairs=agreement.pairs,
        pairs_label=agreement.pairs_label,
        tables=[table],
    )
