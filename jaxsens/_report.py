"""Self-contained HTML reports: one file with the tables and the plots inline, nothing fetched from a network.

A :class:`Report` collects blocks (headings, paragraphs, tables, figures, preformatted text) and renders them as
one HTML document: inline CSS only, no scripts, figures embedded as ``data:image/png;base64`` URIs. Every piece of
text is escaped with :func:`html.escape`. The document carries a Content-Security-Policy meta tag,
``default-src 'none'; img-src data:; style-src 'unsafe-inline'``, so a browser refuses (and reports on its console)
any network load or script a future edit might slip in: the report opens offline, in a mail attachment or an
archive, exactly as written.

:func:`result_report` builds the report of any method's :class:`~jaxsens.Result` (or :class:`~jaxsens.Results`
for a model with several inputs): what was computed and how, the options, the number of rows, the method's plot
(for sequence inputs the plot holds the per-element heatmap), and the full ranking table with the 95% intervals.

Example:
    >>> import numpy as np, jaxsens
    >>> from jaxsens._report import Report
    >>> rep = Report("Weekly check")
    >>> rep.table(["feature", "importance"], [["f<1>", 0.123456]], caption="Ranking")
    >>> doc = rep.html()
    >>> "<td>f&lt;1&gt;</td>" in doc and "0.1235" in doc and "://" not in doc
    True
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converters.errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    DataFileNotFoundError,
    MissingExtraError,
)
from jaxsens._io import atomic_write

__all__ = ["CSP", "Report", "result_report"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""The report's Content-Security-Policy: images only from ``data:`` URIs, inline styles, nothing else."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_Z95 = 1.959963984540054  # as jaxsens._results.Z95: intervals are importance +- 1.96 x stderr

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.4; }
header { border-bottom: 2px solid #888; margin-bottom: 1.5em; }
header dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
header dt { font-weight: 600; color: #555; }
header dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
table { border-collapse: collapse; margin: 1em 0 2em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.4em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
thead th { background: #eef2f8; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #f7f7f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
footer { margin-top: 3em; font-size: 0.8em; color: #777; }
"""


def _text(value: Any) -> str:
    """A cell's text: numbers to 4 significant digits (ints exactly), booleans and the rest as ``str``."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    if value is None:
        return "-"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


class Report:
    """One self-contained HTML document, built block by block.

    Args:
        title: the document's title (the ``<title>`` and the top heading).
        meta: extra header lines, ``{label: text}`` (e.g. ``{"model": "m.onnx", "data": "x.csv"}``), shown after
            the jaxsens version and the date.

    Every text is escaped; figures become ``data:image/png;base64`` URIs; :meth:`html` returns the document and
    :meth:`write` writes it atomically.
    """

    def __init__(self, title: str, *, meta: Mapping[str, Any] | None = None):
        if not isinstance(title, str):
            raise ArgumentTypeError(f"Report(title) takes a str, got {type(title).__name__}")
        if meta is not None and not isinstance(meta, Mapping):
            raise ArgumentTypeError(
                f"Report(meta=) takes a mapping {{label: text}}, got {type(meta).__name__}"
            )
        import jaxsens

        self.title = title
        self.meta: dict[str, str] = {
            "jaxsens": str(jaxsens.__version__),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **{str(k): _text(v) for k, v in (meta or {}).items()},
        }
        self._blocks: list[str] = []
        self._n_figures = 0

    # ------------------------------------------------------------------------------------------- blocks
    def heading(self, text: str, level: int = 2) -> None:
        """A section heading ``<h2>`` (``level`` 2..6; the title is the only ``<h1>``)."""
        if isinstance(level, bool) or not isinstance(level, numbers.Integral) or not 2 <= int(level) <= 6:
            raise ArgumentError(f"heading(level=) takes 2..6 (the title is level 1), got {level!r}")
        self._blocks.append(f"<h{int(level)}>{html.escape(str(text))}</h{int(level)}>")

    def paragraph(self, text: str) -> None:
        """A paragraph of escaped text."""
        self._blocks.append(f"<p>{html.escape(str(text))}</p>")

    def preformatted(self, text: str) -> None:
        """Text kept as written (monospace, escaped), e.g. a command line or a text summary."""
        self._blocks.append(f"<pre>{html.escape(str(text))}</pre>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence], *, caption: str | None = None) -> None:
        """A table with ``<thead>`` / ``<tbody>``; numbers right-aligned, to 4 significant digits.

        Args:
            header: the column names.
            rows: one sequence per row, each as long as ``header``; cells are numbers (ints exact, reals to 4
                significant digits, NaN as ``NaN``), ``None`` (shown as ``-``) or anything ``str`` takes.
            caption: the table's ``<caption>``.
        """
        if isinstance(header, str) or not isinstance(header, Sequence) or not header:
            raise ArgumentError(f"table(header=) takes a non-empty list of column names, got {header!r}")
        n = len(header)
        body = []
        for i, row in enumerate(rows):
            if isinstance(row, str) or not isinstance(row, Sequence | np.ndarray):
                raise ArgumentTypeError(
                    f"table(rows=): row {i} is a {type(row).__name__}, not a list of cells"
                )
            if len(row) != n:
                raise ArgumentError(
                    f"table(rows=): row {i} has {len(row)} cells for {n} columns ({list(header)}); give one cell "
                    "per column"
                )
            cells = "".join(
                f'<td class="num">{html.escape(_text(c))}</td>'
                if _is_number(c)
                else f"<td>{html.escape(_text(c))}</td>"
                for c in row
            )
            body.append(f"<tr>{cells}</tr>")
        cap = f"<caption>{html.escape(str(caption))}</caption>" if caption is not None else ""
        head = "".join(f'<th scope="col">{html.escape(str(h))}</th>' for h in header)
        self._blocks.append(
            f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"
        )

    def figure(self, fig_or_png, *, caption: str | None = None) -> None:
        """A figure embedded as a ``data:image/png;base64`` URI.

        Args:
            fig_or_png: a matplotlib ``Figure`` (rendered to PNG at 100 dpi, then closed), PNG bytes, or the path
                of a PNG file.
            caption: the ``<figcaption>`` and the image's ``alt`` text.
        """
        if isinstance(fig_or_png, bytes | bytearray | memoryview):
            png = bytes(fig_or_png)
            what = "figure(bytes)"
        elif isinstance(fig_or_png, str | os.PathLike):
            path = os.fspath(fig_or_png)
            try:
                with open(path, "rb") as f:
                    png = f.read()
            except FileNotFoundError:
                raise DataFileNotFoundError(f"figure({path!r}): the file does not exist") from None
            except OSError as e:
                raise DataError(f"figure({path!r}): cannot read the file ({e.strerror or e})") from None
            what = f"figure({path!r})"
        elif hasattr(fig_or_png, "savefig"):
            buf = io.BytesIO()
            fig_or_png.savefig(buf, format="png", dpi=100)
            png = buf.getvalue()
            what = "figure(Figure)"
            _close(fig_or_png)
        else:
            raise ArgumentTypeError(
                f"figure() takes a matplotlib Figure, PNG bytes or a PNG file path, got {type(fig_or_png).__name__}"
            )
        if not png.startswith(_PNG_SIGNATURE):
            raise DataError(f"{what}: not a PNG image (the first bytes are {png[:8]!r}); give a PNG")
        self._n_figures += 1
        alt = caption if caption is not None else f"figure {self._n_figures}"
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(str(caption))}</figcaption>" if caption is not None else ""
        self._blocks.append(
            f'<figure><img alt="{html.escape(str(alt))}" src="data:image/png;base64,{data}">{cap}</figure>'
        )

    # ------------------------------------------------------------------------------------------ output
    def html(self) -> str:
        """The whole document: inline CSS, no scripts, no network loads (the CSP meta tag forbids them)."""
        meta = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in self.meta.items())
        title = html.escape(self.title)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CSP)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<header><h1>{title}</h1><dl>{meta}</dl></header>\n<main>\n"
            + "\n".join(self._blocks)
            + "\n</main>\n<footer>Written by jaxsens; self-contained: no scripts, no network loads.</footer>\n"
            "</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike) -> None:
        """Write :meth:`html` to ``path`` (UTF-8), atomically (:func:`jaxsens._io.atomic_write`)."""
        atomic_write(path, self.html())


def _close(fig) -> None:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - a Figure without pyplot
        return
    plt.close(fig)


# ------------------------------------------------------------------------------------------- results
def result_report(
    result, *, title: str | None = None, top: int = 20, meta: Mapping[str, Any] | None = None
) -> Report:
    """The report of a method's result: summary, options, the plot and the full ranking table.

    Args:
        result: any :class:`jaxsens.Result`, or :class:`jaxsens.Results` (a model with several inputs: the merged
            ranking, then one section per input).
        title: the document title (default: ``"jaxsens: <method> importance"``).
        top: features in the plot (the tables always list every feature); for sequence inputs, also the rows
            of the per-element table.
        meta: extra header lines, e.g. ``{"model": path, "data": path}`` (see :class:`Report`).

    Returns:
        The :class:`Report`; ``.write(path)`` writes it.

    Without matplotlib (the ``plot`` extra) the report holds the tables and a sentence saying why there is no plot.
    """
    from jaxsens._results import Result, Results

    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise ArgumentError(f"result_report(top=) takes a positive int, got {top!r}")
    top = int(top)
    if isinstance(result, Results):
        parts = list(result.values())
        if not parts:
            raise ArgumentError("result_report(): the Results holds no inputs")
        first = parts[0]
    elif isinstance(result, Result):
        first = result
    else:
        raise ArgumentTypeError(
            f"result_report() takes a jaxsens Result or Results, got {type(result).__name__}"
        )
    rep = Report(title if title is not None else f"jaxsens: {first.method} importance", meta=meta)
    rep.heading("What was computed")
    spec = _spec(first.method)
    if spec is not None and spec.summary:
        rep.paragraph(f"{first.method}: {spec.summary}")
    if isinstance(result, Results):
        rep.paragraph(
            f"A model with {len(result)} inputs ({', '.join(result)}); the merged ranking labels each feature "
            "input:feature."
        )
        for name, r in result.items():
            rep.paragraph(f"input {name}: {r.summary()}")
    else:
        rep.paragraph(result.summary())
    rep.paragraph(
        f"importance: {first.importance_label}. The 95% interval is importance \u00b1 1.96 \u00d7 stderr "
        f"({first.stderr_rule})."
    )
    pairs = [
        p
        for r in (result.values() if isinstance(result, Results) else [result])
        for p in (getattr(r, "correlated_pairs", None) or ())
    ]
    if pairs:
        rep.paragraph(
            "Correlated inputs (|r| > 0.9): "
            + ", ".join(f"{a} ~ {b} (r={_text(r)})" for a, b, r in pairs)
            + ". The method measures the response to each input with the others held fixed: a model may rely on "
            "either of two correlated inputs, so a low score does not mean the quantity does not matter."
        )
    if first.n_skipped:
        rep.paragraph(f"{first.n_skipped} rows with NaN / Inf were skipped (nan_policy='skip').")
    _options_table(rep, first)
    if isinstance(result, Results):
        _ranking_section(rep, result, top=top, what=f"{first.method}, all {len(result)} inputs")
        for name, r in result.items():
            rep.heading(f"Input {name}", 2)
            _ranking_section(rep, r, top=top, what=f"input {name}", level=3)
    else:
        _ranking_section(rep, result, top=top, what=first.method)
    return rep


def _spec(method: str):
    try:
        from jaxsens._methods import methods

        return methods().get(method)
    except ImportError:  # pragma: no cover
        return None


def _options_table(rep: Report, result) -> None:
    rows = [["n_samples", result.n_samples]]
    rows += [[str(k), _option_text(v)] for k, v in sorted(result.options.items())]
    rep.table(["option", "value"], rows, caption=f"Options of {result.method}")


def _option_text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return "None" if value is None else _text(value)


def _ranking_section(rep: Report, result, *, top: int, what: str, level: int = 2) -> None:
    """The plot (top ``top``), the full ranking table, the per-output table and, for sequences, the top elements."""
    from jaxsens._results import Results

    many = isinstance(result, Results)
    rows = result.ranking()
    rep.heading(f"Ranking: {what}", level)
    k = min(top, len(rows))
    try:
        fig = result.plot(top=k)
    except MissingExtraError as e:
        rep.paragraph(f"(no plot: {e})")
    else:
        rep.figure(fig, caption=f"{what}: top {k} of {len(rows)} by importance, with 95% intervals")
    one = next(iter(result.values())) if many else result
    mean_note = ""
    if one.n_outputs > 1:
        mean_note = f" (mean over the {one.n_outputs} outputs; stderr: the mean of their stderrs)"
    sequence = not many and len(result.input_shape) > 1
    if sequence:
        mean_note += f"; each feature summed over input axes {list(range(len(result.input_shape) - 1))}"
    rep.table(
        ["rank", "feature", "importance", "stderr", "95% low", "95% high"],
        [[i, label, v, e, v - _Z95 * e, v + _Z95 * e] for i, (label, v, e) in enumerate(rows, 1)],
        caption=f"Ranking of all {len(rows)} features{mean_note}",
    )
    if many:  # Results: the per-input sections follow
        return
    if result.n_outputs > 1:
        imp, err = result.feature_importance()
        order = [result.feature_names.index(label) for label, _, _ in rows]
        header = ["feature"] + [f"{o} ({s})" for o in result.output_names for s in ("importance", "stderr")]
        table = [
            [result.feature_names[j]] + [x for i in range(result.n_outputs) for x in (imp[i, j], err[i, j])]
            for j in order
        ]
        rep.table(header, table, caption="Per output (features in the order of the ranking above)")
    if sequence:
        elements = result.ranking(by="element")
        k_el = min(top, len(elements))
        rep.table(
            ["rank", "element", "importance", "stderr", "95% low", "95% high"],
            [
                [i, label, v, e, v - _Z95 * e, v + _Z95 * e]
                for i, (label, v, e) in enumerate(elements[:k_el], 1)
            ],
            caption=f"Top {k_el} of {len(elements)} input elements (position, feature)",
        )
