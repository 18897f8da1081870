"""HTML reports (``--report``): one self-contained file, rendered in headless Chromium with no console errors.

The report's tables are read back with the standard library's HTML parser and compared with the result they
came from; the file is rendered by Debian's ``chromium`` (``--dump-dom`` for the rendered DOM, console messages
from ``--enable-logging=stderr``, ``--screenshot`` for the pixels). A deliberately broken report (an external
image, an inline script, an external stylesheet) proves that the console check catches what the page's
Content-Security-Policy blocks.
"""

from __future__ import annotations

import base64
import html.parser
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import jaxsens
from jaxsens import examples
from jaxsens._report import CSP, Report, result_report
from jaxsens._results import Z95, Results
from jaxsens.cli import main
from jaxsens.errors import ArgumentError, ArgumentTypeError, DataError

CHROMIUM_TIMEOUT_S = 60
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Chromium prints each console message of the page as a log line "[pid:tid:date:LEVEL:CONSOLE:line] ..."
# (older builds: "CONSOLE(line)"); the report has no scripts, so any console message is an error of the page.
_CONSOLE = re.compile(r"^\[[^\]]*:CONSOLE[:(][^\]]*\].*$", re.MULTILINE)
_PLOT_BLUE = np.array([0x4C, 0x72, 0xB0]) / 255  # the bars of jaxsens._results.bar_plot


# ------------------------------------------------------------------------------------------- helpers
class _Tables(html.parser.HTMLParser):
    """Tables (caption, header, body rows as text), img sources and the text of an HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.imgs: list[dict] = []
        self.links: list[tuple[str, str]] = []  # (attribute, value) of every src / href
        self.csp: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [(k, v or "") for k, v in attrs if k in ("src", "href")]
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp.append(a.get("content") or "")
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag in ("thead", "tbody", "caption"):
            self._in = tag
            if tag == "caption":
                self._cell = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell or []).strip())
            self._cell = None
        elif tag == "caption":
            self.tables[-1]["caption"] = "".join(self._cell or []).strip()
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["header" if self._in == "thead" else "rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    p.close()
    return p


def table(doc: _Tables, caption_start: str) -> dict:
    found = [t for t in doc.tables if t["caption"].startswith(caption_start)]
    assert len(found) == 1, (
        f"one table captioned {caption_start!r} expected; captions: {[t['caption'] for t in doc.tables]}"
    )
    return found[0]


def g4(x: float) -> str:
    return "NaN" if np.isnan(x) else f"{x:.4g}"


def ranking_row(i: int, row) -> list[str]:
    label, v, e = row
    return [str(i), label, g4(v), g4(e), g4(v - Z95 * e), g4(v + Z95 * e)]


def chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if path is None:
        pytest.fail(
            "headless Chromium is needed to render the HTML report and was not found (chromium on PATH or "
            "/usr/bin/chromium); the README's test command installs it: apt-get install chromium"
        )
    return path


def render(path, profile) -> tuple[str, list[str]]:
    """``(rendered DOM, console lines)`` of the HTML file ``path`` in headless Chromium."""
    proc = subprocess.run(
        [
            chromium(),
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            f"file://{os.path.abspath(path)}",
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {proc.stderr[-3000:]}"
    assert "<html" in proc.stdout, f"chromium printed no DOM: {proc.stderr[-3000:]}"
    return proc.stdout, _CONSOLE.findall(proc.stderr)


def screenshot(path, profile, png) -> np.ndarray:
    """The first 1280 x 2400 pixels of the rendered page, ``[H, W, 3]`` floats in 0..1."""
    import matplotlib.image

    proc = subprocess.run(
        [
            chromium(),
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            "--window-size=1280,2400",
            f"file://{os.path.abspath(path)}",
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0 and os.path.exists(png), f"no screenshot: {proc.stderr[-3000:]}"
    return matplotlib.image.imread(png)[..., :3]


def linear_model(w, *, input_shape=None):
    """``y = W x`` (sequence inputs: ``W`` applied to the flattened sample); its Jacobian importance is ``|W|``."""
    w = np.asarray(w, np.float32)
    shape = input_shape or (w.shape[1],)
    return jaxsens.Model.from_function(
        lambda p, x: p @ x.reshape(-1),
        w,
        input_shape=shape,
        feature_names=[f"f<{i}>" for i in range(shape[-1])],
    )


# ----------------------------------------------------------------------------------------- Report
def test_report_escapes_text_formats_numbers_and_embeds_pngs(tmp_path):
    plt = jaxsens._results.pyplot()
    rep = Report("A <b>bold</b> & risky title", meta={"model": "m<1>.onnx"})
    rep.heading("Section <2>")
    rep.paragraph('x < y & "z"')
    rep.preformatted("<script>alert(1)</script>")
    rep.table(
        ["name", "value", "count", "flag"],
        [
            ["a<b", 0.000123456, 7, True],
            ["c", float("nan"), np.int64(12345678), None],
            ["d", np.float32(123456.7), -3, False],
        ],
        caption="Cells & <numbers>",
    )
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    rep.figure(fig, caption="a line <1>")
    assert not plt.fignum_exists(fig.number)  # the figure was closed
    png = tmp_path / "p.png"
    fig2, _ = plt.subplots(figsize=(1, 1))
    fig2.savefig(png)
    plt.close(fig2)
    rep.figure(png)
    rep.figure(png.read_bytes(), caption="bytes")
    text = rep.html()
    doc = parse(text)
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    assert doc.csp == [CSP] and "default-src 'none'" in CSP
    assert (
        "<script" not in text
        and "<b>bold" not in text
        and "A &lt;b&gt;bold&lt;/b&gt; &amp; risky title" in text
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "m&lt;1&gt;.onnx" in text
    t = table(doc, "Cells & <numbers>")
    assert t["header"] == [["name", "value", "count", "flag"]]
    assert t["rows"] == [
        ["a<b", "0.0001235", "7", "True"],
        ["c", "NaN", "12345678", "-"],
        ["d", "1.235e+05", "-3", "False"],
    ]
    assert [i["alt"] for i in doc.imgs] == ["a line <1>", "figure 2", "bytes"]
    for img in doc.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert [k for k, v in doc.links if not v.startswith("data:")] == []
    rep.write(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == text


def test_report_refuses_bad_blocks(tmp_path):
    rep = Report("t")
    with pytest.raises(ArgumentError, match=r"row 1 has 1 cells for 2 columns"):
        rep.table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ArgumentError, match="heading"):
        rep.heading("x", 1)
    (tmp_path / "x.png").write_text("not a png")
    with pytest.raises(DataError, match="not a PNG"):
        rep.figure(tmp_path / "x.png")
    with pytest.raises(ArgumentTypeError, match="matplotlib Figure, PNG bytes or a PNG file path"):
        rep.figure(3)
    with pytest.raises(ArgumentTypeError):
        result_report({"a": 1})
    assert "<table" not in rep.html()  # nothing half-added


# ------------------------------------------------------------------------------------ result_report
def test_result_report_lists_every_feature_of_the_ranking():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 82))
    xs = rng.normal(size=(40, 82)).astype(np.float32)
    r = jaxsens.jacobian_importance(linear_model(w), xs)
    np.testing.assert_allclose(r.importance, np.abs(w), rtol=1e-5)  # the oracle: |W| (float32 W)
    doc = parse(result_report(r, top=10).html())
    t = table(doc, "Ranking of all 82 features")
    assert t["header"] == [["rank", "feature", "importance", "stderr", "95% low", "95% high"]]
    assert t["rows"] == [ranking_row(i, row) for i, row in enumerate(r.ranking(), 1)]
    opts = table(doc, "Options of jacobian")
    assert ["n_samples", "40"] in opts["rows"] and ["mode", str(r.options["mode"])] in opts["rows"]
    per = table(doc, "Per output")
    imp, _ = r.feature_importance()
    assert [row[0] for row in per["rows"]] == [label for label, _, _ in r.ranking()]
    j = r.feature_names.index(per["rows"][0][0])
    assert per["rows"][0][1::2] == [g4(imp[0, j]), g4(imp[1, j])]
    assert len(doc.imgs) == 1 and "top 10 of 82" in doc.imgs[0]["alt"]


def test_result_report_of_a_sequence_has_the_heatmap_and_the_top_elements():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(1, 12))
    r = jaxsens.jacobian_importance(
        linear_model(w, input_shape=(4, 3)), rng.normal(size=(10, 4, 3)).astype(np.float32)
    )
    doc = parse(result_report(r, top=5).html())
    assert table(doc, "Ranking of all 3 features")["rows"] == [
        ranking_row(i, row) for i, row in enumerate(r.ranking(), 1)
    ]
    el = table(doc, "Top 5 of 12 input elements")
    assert el["rows"] == [ranking_row(i, row) for i, row in enumerate(r.ranking(by="element")[:5], 1)]
    assert el["rows"][0][1] == "f<{}>[{}]".format(*reversed(divmod(int(np.argmax(np.abs(w))), 3)))
    assert len(doc.imgs) == 1  # Result.plot: heatmap + bars in one figure


def test_result_report_of_several_inputs():
    rng = np.random.default_rng(2)
    ra = jaxsens.jacobian_importance(
        linear_model(rng.normal(size=(2, 4))), rng.normal(size=(9, 4)).astype(np.float32)
    )
    rb = jaxsens.jacobian_importance(
        linear_model(rng.normal(size=(2, 3))), rng.normal(size=(9, 3)).astype(np.float32)
    )
    both = Results({"a": ra, "b": rb})
    doc = parse(result_report(both).html())
    merged = table(doc, "Ranking of all 7 features")
    assert merged["rows"] == [ranking_row(i, row) for i, row in enumerate(both.ranking(), 1)]
    assert merged["rows"][0][1].split(":")[0] in ("a", "b")
    assert table(doc, "Ranking of all 4 features")["rows"] == [
        ranking_row(i, x) for i, x in enumerate(ra.ranking(), 1)
    ]
    assert table(doc, "Ranking of all 3 features")["rows"] == [
        ranking_row(i, x) for i, x in enumerate(rb.ranking(), 1)
    ]
    assert len(doc.imgs) == 3  # the merged plot and one per input


# ------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """``jaxsens importance`` on the bundled demo with ``--report``: (report path, output folder)."""
    out = tmp_path_factory.mktemp("cli")
    path = out / "report.html"
    code = main(
        [
            "importance",
            examples.default_model_path(),
            examples.default_data_path(),
            "--out",
            str(out),
            "--quiet",
            "--report",
            str(path),
        ]
    )
    assert code == 0
    return path, out


def test_importance_report_from_the_command_line(cli_report):
    path, out = cli_report
    text = path.read_text(encoding="utf-8")
    result = jaxsens.load_result(out / "importance.json")
    doc = parse(text)
    assert [v for k, v in doc.links if not v.startswith("data:")] == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    rows = table(doc, "Ranking of all 82 features")["rows"]
    assert rows[0] == ranking_row(1, result.ranking()[0]) and rows[0][1] == "f03"
    assert len(rows) == 82
    assert os.path.abspath(examples.default_model_path()) in text  # the header names the model


def test_demo_writes_a_report(tmp_path):
    assert (
        main(["demo", "--out", str(tmp_path / "d"), "--quiet", "--report", str(tmp_path / "demo.html")]) == 0
    )
    doc = parse((tmp_path / "demo.html").read_text(encoding="utf-8"))
    saved = jaxsens.load_result(tmp_path / "d" / "importance.json")
    assert table(doc, "Ranking of all 82 features")["rows"][:4] == [
        ranking_row(i, row) for i, row in enumerate(saved.ranking()[:4], 1)
    ]


def test_bad_report_path_fails_before_any_work(tmp_path, capsys):
    # a model and data that do not exist: had either been opened, the error would name them
    out = tmp_path / "out"
    args = [
        "importance",
        str(tmp_path / "no-model.onnx"),
        str(tmp_path / "no-data.npy"),
        "--out",
        str(out),
        "--quiet",
        "--report",
        str(tmp_path / "missing" / "r.html"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report" in err[0] and "does not exist; create it first" in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "dir.html").mkdir()
    assert main([*args[:-1], str(tmp_path / "dir.html")]) == 2
    assert "is a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Chromium
@pytest.mark.timeout(4 * CHROMIUM_TIMEOUT_S)
def test_report_renders_in_chromium_without_console_errors(cli_report, tmp_path):
    path, out = cli_report
    dom, console = render(path, tmp_path / "profile")
    assert console == [], "console messages:\n" + "\n".join(console)
    doc = parse(dom)
    result = jaxsens.load_result(out / "importance.json")
    rows = table(doc, "Ranking of all 82 features")["rows"]
    assert rows == [ranking_row(i, row) for i, row in enumerate(result.ranking(), 1)]
    assert table(doc, "Options of jacobian")["rows"][0] == ["n_samples", str(result.n_samples)]
    assert len(doc.imgs) == 1
    png = base64.b64decode(doc.imgs[0]["src"].split(",", 1)[1])
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300
    # the screenshot: not one colour, and the plot's bars are on screen (the image was decoded and drawn)
    shot = screenshot(path, tmp_path / "profile2", tmp_path / "shot.png")
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 10
    blue = np.all(np.abs(shot - _PLOT_BLUE) < 0.03, axis=-1).sum()
    assert blue > 5000, f"{blue} pixels of the plot's bar colour: the figure was not drawn"


@pytest.mark.timeout(2 * CHROMIUM_TIMEOUT_S)
@pytest.mark.parametrize(
    ("inject", "drop_csp", "expect"),
    [
        (
            '<img alt="x" src="http://192.0.2.1/tracker.png">',
            False,
            ("http://192.0.2.1/tracker.png", "Content Security Policy"),
        ),
        (
            "<script>undefined_function();</script>",
            False,
            ("Executing inline script", "Content Security Policy"),
        ),
        (
            '<link rel="stylesheet" href="https://192.0.2.1/x.css">',
            False,
            ("https://192.0.2.1/x.css", "Content Security Policy"),
        ),
        ("<script>undefined_function();</script>", True, ("Uncaught ReferenceError", "undefined_function")),
    ],
    ids=["external-image", "inline-script", "external-stylesheet", "script-error-without-csp"],
)
def test_the_console_check_catches_a_broken_report(cli_report, tmp_path, inject, drop_csp, expect):
    path, _ = cli_report
    text = path.read_text(encoding="utf-8")
    if drop_csp:
        text = text.replace('http-equiv="Content-Security-Policy"', 'name="no-csp"', 1)
        assert "Content-Security-Policy" not in text
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("</main>", inject + "</main>", 1), encoding="utf-8")
    dom, console = render(broken, tmp_path / "profile")
    assert console, "the console check saw nothing on a broken page"
    assert any(all(e in line for e in expect) for line in console), console
    assert table(parse(dom), "Ranking of all 82 features")["rows"]  # the page itself still rendered
