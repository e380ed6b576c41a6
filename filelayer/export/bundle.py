"""One thread's export as a page plus the files beside it, for the CLI and the app.

:func:`build` reads a thread through the storage core and returns a :class:`Bundle`: the
page (Markdown or HTML) and every file it refers to, by path relative to the export
directory. ``filelayer export -o DIR`` writes the bundle into ``DIR``; the app's export
route zips it (Markdown) or sends the page alone (HTML, with its images inside).

Beside ``<stem>.md`` (or ``.html``) go ``<stem>.files/``: a copy of every element file
(always, whatever the page shows of it), ``_tables/<element id>.csv`` with the whole
data of each dataframe, ``_charts/<element id>.html`` drawing each Plotly chart, and,
once for the whole directory, ``plotly.min.js``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError
from ..format.journal import text_or_none
from ..store.archive import ArchiveStore
from . import elements as ee
from .elements import ElementView
from .markdown import defused, fence, file_stem, link_target, plain, render_markdown

FORMATS = ("markdown", "html")
TABLES_DIR = "_tables"
CHARTS_DIR = "_charts"
"""Where a dataframe's CSV and a chart's page go inside ``<stem>.files/``: names that no
element file can have (element files begin with a letter or a digit)."""
_AUTO = object()


@dataclass
class Bundle:
    """An exported thread: the page and the files beside it."""

    stem: str
    name: str
    text: str
    files: dict[str, bytes | Path] = field(default_factory=dict)
    """By path relative to the export directory: the bytes, or the archive's file to
    copy (element files are read one at a time, when written, not all at once)."""
    pieces: Iterator[str] | None = None
    """The page as pieces to write one after another, in place of :attr:`text` (which
    is then empty): see ``build(streamed=True)``."""

    def items(self) -> list[tuple[str, bytes | Path]]:
        """Every file of the export, the page first."""
        return [(self.name, self.text.encode("utf-8")), *sorted(self.files.items())]


def content(value: bytes | Path) -> bytes:
    """The bytes of one of :attr:`Bundle.files`."""
    return value.read_bytes() if isinstance(value, Path) else value


def element_views(
    store: ArchiveStore,
    thread: dict[str, Any],
    stem: str,
    files: dict[str, bytes | Path],
    *,
    plotly: bytes | None,
    link: Callable[[dict[str, Any], str], str | None] | None = None,
) -> dict[str, ElementView]:
    """Read every element of ``thread``, put what goes beside the page into ``files``
    and say what the page shows. ``link(element, relative)`` overrides the target of a
    stored file (the app's HTML page links to the element route instead; ``None``: the
    file is left out of a page that stands alone), and then nothing else is put beside
    the page (a dataframe's CSV copy)."""
    views: dict[str, ElementView] = {}
    folder = f"{stem}.files"
    taken: set[str] = set()

    def claim(relative: str) -> str:
        """``relative``, or, when another file of this page took that name ignoring
        case (element ids keep theirs, and macOS and Windows make ``DF.json`` and
        ``df.json`` one file), a number before its extension."""
        head, dot, ext = relative.rpartition(".")
        base, suffix = (head, dot + ext) if dot and "/" not in ext else (relative, "")
        candidates = itertools.chain(
            [relative], (f"{base}-{n}{suffix}" for n in itertools.count(2))
        )
        for name in candidates:
            if name.lower() not in taken:
                taken.add(name.lower())
                return name
        raise AssertionError("unreachable: the names to try never end")

    for element in thread.get("elements") or []:
        view = ElementView(
            id=str(element["id"]),
            name=str(element.get("name") or element.get("type") or "file"),
            type=str(element.get("type") or "file"),
            href=_external(element.get("url")),
        )
        views[view.id] = view
        found = store.element_file(thread["id"], element["id"])
        if found is None:
            continue
        _, source = found
        if not source.is_file():
            continue
        relative = claim(f"{folder}/{_copy_name(element, source.name)}")
        files[relative] = source
        if link is None:
            view.href = relative
        else:
            target = link(element, relative)
            # Left out of a page that stands alone: its own URL, if any, still links.
            view.left_out = target is None and view.href is None
            view.href = target if target is not None else view.href
            # An image not put inside the page is a link: the page loads nothing else.
            view.embed = view.type != "image" or (view.href or "").startswith("data:")
        if view.type not in ("text", "dataframe", "plotly"):
            continue
        try:
            data = source.read_bytes()
        except OSError:
            continue
        if view.type == "text":
            view.text, view.cut = ee.read_text(data)
            if ee.is_code(element):
                view.code_language = str(element.get("language"))
        elif view.type == "dataframe":
            view.table = ee.read_table(data)
            if view.table is None:
                view.table_note = ee.oversized_note(data)
            whole = ee.table_csv(data)
            if whole is not None and link is None:
                view.csv_href = claim(f"{folder}/{TABLES_DIR}/{view.id}.csv")
                files[view.csv_href] = whole
        elif view.type == "plotly" and plotly is not None and ee.is_figure(data):
            files[ee.PLOTLY_SCRIPT] = plotly
            page = ee.chart_page(data, view.name, f"../../{ee.PLOTLY_SCRIPT}")
            view.chart_href = claim(f"{folder}/{CHARTS_DIR}/{view.id}.html")
            files[view.chart_href] = page.encode("utf-8")
    return views


_JSON_TYPES = frozenset(["dataframe", "plotly", "custom"])


def _copy_name(element: dict[str, Any], stored: str) -> str:
    """The stored name, given an extension when it has none (Chainlit stores a
    dataframe and a chart without a type that names one): a reader opens
    ``<id>.json`` with the right program, not a bare ``<id>``."""
    if stored != str(element["id"]):
        return stored
    if text_or_none(element.get("type")) in _JSON_TYPES:
        return stored + ".json"
    guessed = mimetypes.guess_extension(str(element.get("mime") or "").split(";")[0])
    return stored + (guessed or "")


def markdown_block(view: ElementView) -> str | None:
    """The Markdown an element shows as, or ``None`` for the plain link."""
    target = link_target(view.href or "")
    if view.text is not None:
        if view.code_language:
            body = fence(view.text.rstrip(), view.code_language)
        else:
            body = defused(view.text.strip())
        note = f"\n\n_(cut here: the whole text is in [{plain(view.name)}]({target}))_"
        return f"📄 **{plain(view.name)}**\n\n{body.strip()}" + (note if view.cut else "")
    if view.table is not None:
        where = f"[{plain(view.name)}.csv]({link_target(view.csv_href or '')})"
        return (
            f"📊 **{plain(view.name)}** ({ee.table_note(view.table)}; all of it in {where})"
            f"\n\n{ee.markdown_table(view.table)}"
        )
    if view.table_note is not None:
        return f"📊 [{plain(view.name)}]({target}) _({plain(view.table_note)})_"
    if view.type == "plotly" and view.href:
        if view.chart_href:
            return f"📈 [{plain(view.name)} (chart)]({link_target(view.chart_href)})"
        return f"📈 [{plain(view.name)} (Plotly figure, JSON)]({target})"
    return None


UNRENDERABLE = (ValueError, TypeError, LookupError, RecursionError, UnicodeError)
"""What rendering a thread whose files hold values no writer of filelayer makes (a
hand-edited manifest, a damaged table element) raises: the export of that one thread
fails with a message, as the exceptions of a bug would not be caught elsewhere."""


def describe(exc: BaseException) -> str:
    """A one-line account of why a thread could not be rendered."""
    if isinstance(exc, RecursionError):
        return "a value nested too deep to render"
    return f"a value it cannot render ({type(exc).__name__}: {exc})"


def build(
    store: ArchiveStore,
    thread: dict[str, Any],
    fmt: str = "markdown",
    *,
    plotly: Any = _AUTO,
    self_contained: bool = False,
    element_url: Callable[[str, str], str] | None = None,
    stem: str | None = None,
    streamed: bool = False,
) -> Bundle:
    """The export of ``thread`` (as :meth:`ArchiveStore.get_thread` returns it).

    ``stem``: the name its files start with, :func:`file_stem`'s by default.

    ``plotly``: the plotly.js to share (default: the installed package's, if any).
    ``self_contained`` (HTML only): images are put inside the page as ``data:`` URLs
    and other files are linked with ``element_url(thread id, element id)``, for a page
    served alone by the app.

    ``streamed`` (HTML): the page comes as
    :attr:`Bundle.pieces`, made while they are written, so that a page of a long
    output is never held whole (nor as bytes beside it)."""
    if fmt not in FORMATS:
        raise InvalidValueError(
            "format", f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})"
        )
    if plotly is _AUTO:
        # Read only for a thread with a chart: plotly.js is 4 MB, held while exporting.
        charts = any(e.get("type") == "plotly" for e in thread.get("elements") or [])
        script = ee.plotly_script() if charts else None
    else:
        script = plotly
    stem = stem or file_stem(thread)
    files: dict[str, bytes | Path] = {}
    link = None
    if self_contained:
        link = _self_contained_link(files, thread, element_url)
        script = None  # the served page runs no script
    views = element_views(store, thread, stem, files, plotly=script, link=link)
    if fmt == "markdown":
        links = {k: v.href for k, v in views.items() if v.href}
        blocks = {k: b for k, v in views.items() if (b := markdown_block(v)) is not None}
        text = render_markdown(thread, links, blocks)
        return Bundle(stem, f"{stem}.md", text, files)
    from .html import html_pieces, render_html

    if streamed:
        if self_contained:
            files.clear()  # inside the page, or linked: nothing goes beside it
        return Bundle(stem, f"{stem}.html", "", files, html_pieces(thread, views))
    text = render_html(thread, views)
    if self_contained:
        files.clear()
    return Bundle(stem, f"{stem}.html", text, files)


INLINE_IMAGE_BYTES = 16 << 20
"""The image bytes a page that stands alone holds inside it, at most. As ``data:`` URLs
they are held several times over while the page is made (the file, its base64, the
page's pieces, the page): beyond this, an image is linked, or named as left out."""


def _self_contained_link(
    files: dict[str, bytes | Path],
    thread: dict[str, Any],
    element_url: Callable[[str, str], str] | None,
) -> Callable[[dict[str, Any], str], str | None]:
    """Where a page that stands alone finds an element's file: an image inside it
    (within :data:`INLINE_IMAGE_BYTES`), any other file at ``element_url``, or nowhere
    (``None``: a page printed alone, with no directory beside it)."""
    room = [INLINE_IMAGE_BYTES]
    made: dict[tuple[str, bytes], str] = {}
    """The ``data:`` URL made for each image's type and bytes' digest: the same image
    stored for several elements (Chainlit stores it once per message it is sent with)
    is one URL, one string, counted once against the room (the page then holds it once:
    :func:`filelayer.export.html.render_html`)."""

    def link(element: dict[str, Any], relative: str) -> str | None:
        if element.get("type") == "image":
            mime = str(element.get("mime") or mimetypes.guess_type(relative)[0] or "")
            if _IMAGE_TYPE_RE.fullmatch(mime) and mime != "image/svg+xml":
                data = content(files[relative])
                key = (mime, hashlib.sha256(data).digest())
                if key in made:
                    return made[key]
                if len(data) <= room[0]:
                    room[0] -= len(data)
                    encoded = base64.b64encode(data).decode("ascii")
                    made[key] = f"data:{mime};base64,{encoded}"
                    return made[key]
        if element_url is not None:
            return element_url(str(thread["id"]), str(element["id"]))
        return None

    return link


_IMAGE_TYPE_RE = re.compile(r"image/[\w.+-]+", re.ASCII)
"""An element's ``mime`` (the client's) that a ``data:`` URL may carry: a type and
nothing else, no parameter, quote or parenthesis that would end the URL where the page
quotes it (an attribute, its style)."""


def _external(url: object) -> str | None:
    """An element's own URL, if an export may link to it (see :func:`ee.safe_url`)."""
    return url if isinstance(url, str) and ee.safe_url(url) else None
