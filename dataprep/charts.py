"""Self-contained HTML reports (output_dir/report.html of the corpus job, run_dir/report.html of a
training run): headings, tables and matplotlib charts, each chart a PNG embedded in the page as a
data URI, so the one file opens anywhere, offline, with nothing beside it.

Charts are drawn on matplotlib's Agg canvas through `Figure` objects, never pyplot: making a
report changes no global state of the process that makes it (a training process, a test).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; }
img { display: block; max-width: 100%; margin: 0.8em 0; }
p.note { color: #555; }
"""


def figure(width: float = 9.0, height: float = 4.0, panels: int | None = None, cols: int | None = None):
    """A figure on the Agg canvas and its axes: one, or a list of `panels` in rows of `cols`
    (default: all side by side); `height` is that of one row."""
    cols = min(cols or panels or 1, panels or 1)
    rows = -(-(panels or 1) // cols)
    fig = Figure(figsize=(width, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    if panels is None:
        return fig, fig.subplots()
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[panels:]:
        fig.delaxes(ax)
    return fig, axes[:panels]


def png_data_uri(fig: Figure, dpi: int = 100) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class HtmlReport:
    """A page built section by section, written atomically by `write`."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.parts = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="note">{html.escape(subtitle)}</p>')
        self.images = 0

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def chart(self, fig: Figure, alt: str) -> None:
        self.parts.append(f'<img src="{png_data_uri(fig)}" alt="{html.escape(alt, quote=True)}">')
        self.images += 1

    def table(self, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        cells = lambda row, tag: "".join(  # noqa: E731
            f"<{tag}{' class=text' if isinstance(v, str) and i else ''}>{html.escape(_cell(v))}</{tag}>"
            for i, v in enumerate(row))
        body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
        self.parts.append(f"<table><tr>{cells(header, 'th')}</tr>{body}</table>")

    def html(self) -> str:
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}'
                f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.html(), encoding="utf-8")
        os.replace(tmp, path)
        return path


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_or_warn(build: Callable[[str | Path], Path], folder: str | Path, log: logging.Logger) -> Path | None:
    """build(folder), or a warning when the report cannot be made: the job's outputs matter more
    than its charts, so a report never fails the job that makes it."""
    try:
        path = build(folder)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the job has done its work
        log.warning("report: not written (%s: %s)", type(e).__name__, e)
        return None
    log.info("report: %s", path)
    return path


def rebuild_command(build: Callable[[str | Path], Path], prog: str, description: str, metavar: str,
                    argv: list[str] | None = None) -> None:
    """`python -m <prog> FOLDER`: build the report of FOLDER again and print its path."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("folder", metavar=metavar)
    print(build(parser.parse_args(argv).folder))
