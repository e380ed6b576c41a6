"""What an export shows of each element, shared by the Markdown and HTML renderers.

Chainlit keeps a dataframe as pandas' ``to_json(orient="split")`` and a Plotly chart as
the figure's JSON; a reader of an export wants a table and a chart, not JSON. This
module turns an element's stored bytes into what a reader sees: a text element's text
(shown inline, fenced when it is code), a dataframe's first rows (the full data goes
beside the export as CSV), and a page that draws a chart with one ``plotly.min.js``
shared by the whole export, taken from the ``plotly`` package when it is installed at
export time (without it the chart stays a link to its JSON: no 4 MB script per chart,
and nothing fetched from the network).

Everything here is a pure function of the bytes it is given: an unchanged archive
exports to byte-identical files.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_ROWS = 20
"""A dataframe shows this many rows in the export; the CSV beside it has them all."""
TEXT_LIMIT = 20_000
"""A text element longer than this is cut in the export (its file has it all)."""
TABLE_CELLS = 1_000_000
"""A dataframe kept as records (a list of objects) becomes a table of as many columns as
keys its records name between them, a cell for each record and column: past this many
cells it is not made a table (a few kilobytes of records that each name keys of their own
would make hundreds of megabytes). The export links to its file instead, copied as it is."""
PLOTLY_SCRIPT = "plotly.min.js"
"""Where the one shared copy of plotly.js goes, at the top of the export directory."""


_SAFE_URL_RE = re.compile(r"(?:https?:|mailto:|#|\.{0,2}/(?![/\\])|[\w.-]+(?:/|$))", re.IGNORECASE)
_DROPPED_RE = re.compile(r"[\t\n\r]")
"""What a browser removes from a URL before reading it."""


def safe_url(url: str) -> bool:
    """Whether an export may link to ``url``: the web, mail, an anchor or a path, never a
    scheme a browser runs (``javascript:``, ``vbscript:``) or that carries a page of its
    own (``data:``), nor a path that names a host (``//host/``, or ``/\\host``: a browser
    reads a backslash as a slash), which a page opened from a file loads from
    ``file://host/``, a Windows share. An element's ``url`` is the client's, like a
    message's links; it is judged as a browser reads it, without tabs and line breaks."""
    return bool(_SAFE_URL_RE.match(_DROPPED_RE.sub("", url)))


@dataclass(frozen=True)
class Table:
    """The first rows of a dataframe, and how many it has."""

    columns: list[str]
    rows: list[list[str]]
    total: int

    @property
    def cut(self) -> bool:
        return self.total > len(self.rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _split_frame(data: bytes) -> tuple[list[str], list[list[Any]]] | None:
    """Columns and rows of pandas' ``split`` JSON (Chainlit's ``Dataframe``), or of a
    ``records`` list of objects of at most :data:`TABLE_CELLS` cells; ``None`` for
    anything else."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(doc, dict) and isinstance(doc.get("columns"), list):
        rows = doc.get("data")
        if isinstance(rows, list) and all(isinstance(r, list) for r in rows):
            return [_cell(c) for c in doc["columns"]], rows
    if isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc):
        keys: dict[str, None] = {}  # in order of first use, each looked up once
        for record in doc:
            keys.update(dict.fromkeys(record))
        columns = list(keys)
        if len(columns) * len(doc) > TABLE_CELLS:
            return None
        return columns, [[r.get(c) for c in columns] for r in doc]
    return None


def oversized_note(data: bytes) -> str | None:
    """What the export says of a dataframe of records too large to make a table of (see
    :data:`TABLE_CELLS`), or ``None`` when it is not one."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not (isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc)):
        return None
    keys: dict[str, None] = {}
    for record in doc:
        keys.update(dict.fromkeys(record))
    cells = len(keys) * len(doc)
    if cells <= TABLE_CELLS:
        return None
    return (
        f"{len(doc)} records naming {len(keys)} columns between them: too large to show as "
        f"a table ({cells} cells, more than {TABLE_CELLS}); the data is in its file"
    )


def read_table(data: bytes, limit: int = TABLE_ROWS) -> Table | None:
    """The first ``limit`` rows of a stored dataframe (``None``: not a dataframe)."""
    frame = _split_frame(data)
    if frame is None:
        return None
    columns, rows = frame
    return Table(columns, [[_cell(v) for v in row] for row in rows[:limit]], len(rows))


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP's list)."""


def _inert(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as the text it is: a text starting like a
    formula (a chat user's ``=HYPERLINK(...)`` would send the sheet's data away when
    opened) gets a single quote before it, the usual mark of a text cell. Numbers are
    the data's own and stay as they are (``-5`` is no formula)."""
    cell = _cell(value)
    if isinstance(value, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def table_csv(data: bytes) -> bytes | None:
    """The whole dataframe as CSV (UTF-8, ``\\n`` line ends, a header row), for a
    person's spreadsheet: text cells, column names too, are made inert (see
    :func:`_inert`)."""
    frame = _split_frame(data)
    if frame is None:
        return None
    columns, rows = frame
    lines = [_csv_row([_inert(c) for c in columns])]
    lines += [_csv_row([_inert(v) for v in row]) for row in rows]
    return "".join(lines).encode("utf-8")


_CSV_QUOTED = re.compile(r'[,"\r\n]')


def _csv_row(cells: list[str]) -> str:
    """One CSV line as the ``csv`` module writes it (a cell quoted when it holds a
    comma, a quote or a line break), but with a lone carriage return quoted too: with
    ``\\n`` line ends the module leaves one bare, and a reader ends the row there,
    shifting every cell after it into a row of its own."""
    if cells == [""]:
        return '""\n'  # a row of one empty cell, not an empty line
    quoted = (f'"{c.replace(chr(34), chr(34) * 2)}"' if _CSV_QUOTED.search(c) else c for c in cells)
    return ",".join(quoted) + "\n"


def markdown_table(table: Table) -> str:
    """A GitHub Markdown table; pipes and line breaks in cells cannot break it, and a
    cell is data, not Markdown: its signs show as they are (a cell that rendered as
    ``**Assistant** · …`` on a line of its own looked like a speaker's line)."""

    def cell(text: str) -> str:
        escaped = html.escape(_CELL_SIGN_RE.sub(r"\\\1", text), quote=False)
        return _LINE_END_RE.sub("<br>", escaped) or " "

    lines = [
        "| " + " | ".join(cell(c) for c in table.columns) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


_CELL_SIGN_RE = re.compile(r"([\\`*_\[\]!~|#])")
_LINE_END_RE = re.compile(r"\r\n?|\n")
"""What ends a line in Markdown: a carriage return too, alone or before a new line."""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_note(table: Table) -> str:
    if table.cut:
        return f"the first {len(table.rows)} of {table.total} rows"
    return f"{table.total} row{'s' if table.total != 1 else ''}"


def read_text(data: bytes, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """A text element's text (invalid UTF-8 replaced), cut at ``limit`` characters."""
    text = data.decode("utf-8", "replace")
    return (text[:limit], True) if len(text) > limit else (text, False)


def is_code(element: dict[str, Any]) -> bool:
    """A text element holds code when Chainlit was told its language (Markdown text
    has none, or ``markdown``)."""
    language = str(element.get("language") or "").lower()
    return bool(language) and language not in ("markdown", "md")


def plotly_script() -> bytes | None:
    """plotly.js from the installed ``plotly`` package (``None`` when not installed).
    Read from the package's data, without importing plotly itself."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "package_data" / PLOTLY_SCRIPT
        if path.is_file():
            return path.read_bytes()
    return None


def is_figure(data: bytes) -> bool:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("data"), list)


def chart_page(figure: bytes, title: str, script: str) -> str:
    """A standalone page that draws ``figure`` with plotly.js loaded from ``script``
    (a relative URL). The figure is embedded as JSON data, never as code: every ``<`` in
    it (only ever in a string, in JSON) as ``\\u003c``, so that neither a ``</script>``
    ends the element early nor a ``<!--`` makes the parser read past its end."""
    payload = figure.decode("utf-8").replace("<", "\\u003c")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{margin:0;font-family:system-ui,sans-serif}}#chart{{width:100vw;height:100vh}}</style>
<script src="{html.escape(script)}"></script>
</head>
<body>
<div id="chart"></div>
<script type="application/json" id="figure">{payload}</script>
<script>
var figure = JSON.parse(document.getElementById("figure").textContent);
var layout = Object.assign({{}}, figure.layout || {{}}, {{autosize: true}});
delete layout.width; delete layout.height;
Plotly.newPlot("chart", figure.data || [], layout, {{responsive: true}});
</script>
</body>
</html>
"""


@dataclass
class ElementView:
    """What the page shows of one element."""

    id: str
    name: str
    type: str
    href: str | None = None
    """Where its file (or its external ``url``) is; ``None``: not stored, or left out."""
    embed: bool = True
    """Whether the page may show the file in place (an image, a player): not an image
    that a page standing alone links to instead of holding it (see
    :data:`filelayer.export.bundle.INLINE_IMAGE_BYTES`)."""
    left_out: bool = False
    """Stored, but its file is not with a page that stands alone (one printed to the
    terminal): the page says so rather than link to a file that is not there."""
    text: str | None = None
    cut: bool = False
    code_language: str | None = None
    table: Table | None = None
    csv_href: str | None = None
    table_note: str | None = None
    """Why a dataframe is not shown as a table (too large: see :data:`TABLE_CELLS`)."""
    chart_href: str | None = None
    """The page that draws a chart; ``None`` when plotly was not installed."""
