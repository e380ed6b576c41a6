"""A thread as one HTML page that looks like the chat, for people who do not read Markdown.

One self-standing page per thread: the styles are in the page, images sit beside it (or
inside it, as ``data:`` URLs, when the app serves the page alone), and the page runs no
script, so opening an export never runs anything a message contained. Messages are
bubbles (the user's on the right), tool steps fold under the answer they belong to as
in Chainlit's UI, text elements and dataframes show inline, charts link to the page
that draws them.

Message texts are Markdown; the standard library has no Markdown renderer, so
:func:`markdown_html` renders the common subset chat answers use (paragraphs, headings,
lists, fenced and inline code, bold, italic, links, quotes) and shows everything else as
the text it is. Every character of the data is escaped: the only markup in the page is
the renderer's own.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from .._time import when
from ..format.journal import MESSAGE_TYPES, text_or_none
from ..format.tree import step_children
from . import elements as ee
from .elements import ElementView

PAGE_POLICY = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
"""The page's own Content-Security-Policy: it runs no script, whatever got into it (a
renderer bug, a hand edit), wherever it is opened (a file, a share, a mail). Images,
audio and the chart pages beside it still load; a chart page is a document of its own.
The app's export route sends a stricter policy with the page as well."""

STYLE = """
:root{color-scheme:light;--bg:#f5f6f8;--user:#dbe8ff;--bot:#fff;--muted:#6b7280;--line:#e5e7eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:#111827;
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#fff;border-bottom:1px solid var(--line);padding:16px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:var(--muted);font-size:13px}
main{max-width:860px;margin:0 auto;padding:24px 16px 48px}
.msg{display:flex;flex-direction:column;margin:0 0 18px}
.msg.user{align-items:flex-end}
.who{font-size:12px;color:var(--muted);margin:0 6px 4px}
.bubble{max-width:85%;padding:10px 14px;border-radius:14px;background:var(--bot);
border:1px solid var(--line);overflow-wrap:anywhere}
.msg.user .bubble{background:var(--user);border-color:#c7d7f5;border-bottom-right-radius:4px}
.msg.assistant .bubble{border-bottom-left-radius:4px}
.bubble>:first-child{margin-top:0}.bubble>:last-child{margin-bottom:0}
pre{background:#0f172a;color:#e2e8f0;padding:10px 12px;border-radius:8px;overflow:auto;
font-size:13px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
:not(pre)>code{background:#eef0f3;padding:1px 4px;border-radius:4px}
blockquote{margin:8px 0;padding:0 12px;border-left:3px solid var(--line);color:#374151}
details.step{margin:6px 0;border:1px solid var(--line);border-radius:8px;background:#fafafa;
padding:6px 10px;font-size:14px}
details.step summary{cursor:pointer;color:#374151}
details.step .label{font-size:12px;color:var(--muted);margin:8px 0 2px}
.element{margin:10px 0}
.element video{max-width:100%;border-radius:8px}
.element img{max-width:100%;border-radius:8px;border:1px solid var(--line);display:block}
.element .title{font-size:13px;color:var(--muted);margin-bottom:4px}
.element .text{background:#f9fafb;border:1px solid var(--line);border-radius:8px;
padding:8px 12px}
table{border-collapse:collapse;font-size:13px;margin:4px 0;display:block;overflow:auto}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left}
th{background:#f3f4f6}
a{color:#1d4ed8}
.feedback{font-size:13px;color:#374151;margin:6px 0 0}
.attachments{margin-top:24px}
.element iframe.chart{width:100%;height:380px;border:1px solid var(--line);border-radius:8px;
background:#fff}
.badge{display:inline-block;font-size:11px;text-transform:uppercase;letter-spacing:.04em;
background:#eef2ff;color:#3730a3;border-radius:4px;padding:0 5px;margin-right:6px}
"""

_INLINE_RE = re.compile(
    # A code span opens and closes with whole runs of backticks of one length, at most
    # 2,000 characters apart: no run is tried at each of its lengths (cubic in its
    # length before: a minute for 16,000 backticks after one other).
    r"(?<!`)(?P<code>`+)(?!`)(?P<codetext>.{1,2000}?)(?<!`)(?P=code)(?!`)"
    # Neither a label nor a URL runs past the next bracket that could open another (a
    # URL may hold balanced parentheses, one level: Wikipedia's): each character is
    # looked at a bounded number of times (a run of "[" or of "[a](" took time
    # quadratic in its length: an hour for a 1 MB message).
    r"|\[(?P<label>[^\[\]]+)\]\((?P<url>(?:[^()\s]|\([^()\s]*\))+)\)"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|__(?P<bold2>.+?)__"
    r"|(?<![\w*])\*(?P<em>[^*\s][^*]*?)\*(?![\w*])"
    r"|(?<!\w)_(?P<em2>[^_\s][^_]*?)_(?!\w)"
)
_HEADING_RE = re.compile(r"(#{1,6})\s+(.*)")
_LIST_RE = re.compile(r"\s*(?:[-*+]|(\d+)[.)])\s+(.*)")
_FENCE_RE = re.compile(r"\s*(`{3,}|~{3,})\s*([\w+.-]*)")


def _inline(text: str) -> str:
    """Escape ``text`` and render its inline Markdown."""
    out = []
    at = 0
    for m in _INLINE_RE.finditer(text):
        out.append(html.escape(text[at : m.start()]))
        at = m.end()
        if m.group("code"):
            out.append(f"<code>{html.escape(m.group('codetext').strip())}</code>")
        elif m.group("label") is not None:
            url = m.group("url")
            label = _inline(m.group("label"))
            if ee.safe_url(url):
                out.append(f'<a href="{html.escape(url)}">{label}</a>')
            else:
                out.append(label)
        elif m.group("bold") is not None or m.group("bold2") is not None:
            out.append(f"<strong>{_inline(m.group('bold') or m.group('bold2'))}</strong>")
        else:
            out.append(f"<em>{_inline(m.group('em') or m.group('em2'))}</em>")
    out.append(html.escape(text[at:]))
    return "".join(out)


_QUOTE_DEPTH = 16
"""Quotes nested deeper are shown as the text they hold (a renderer that recursed once
per ``>`` failed on a line of a thousand of them)."""


def markdown_html(text: str, depth: int = 0) -> str:
    """The common Markdown of chat messages as HTML (see the module docstring)."""
    return "".join(markdown_pieces(text, depth))


class _Lines:
    """The lines of a text, one at a time, with one looked at ahead: a message's lines
    are not all made at once (a list of a million short lines is ten times the text)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._at = 0
        self._ended = False

    def peek(self) -> str | None:
        """The next line without taking it; ``None`` after the last."""
        if self._ended:
            return None
        end = self._text.find("\n", self._at)
        return self._text[self._at :] if end < 0 else self._text[self._at : end]

    def take(self) -> None:
        end = self._text.find("\n", self._at)
        if end < 0:
            self._ended = True
        else:
            self._at = end + 1


def markdown_pieces(text: str, depth: int = 0) -> Iterator[str]:
    """:func:`markdown_html` as pieces, a paragraph's or a list's line at a time, for a
    page written as it is made (see :func:`html_pieces`)."""
    lines = _Lines(text.replace("\r\n", "\n"))
    blocks = 0  # blocks begun: each after the first on a line of its own
    para = False
    items: list[str] | None = None  # the list item being read, by its lines
    tag = "ul"

    def begin(opening: str) -> str:
        nonlocal blocks
        blocks += 1
        return opening if blocks == 1 else "\n" + opening

    def flush() -> Iterator[str]:
        nonlocal para, items
        if para:
            yield "</p>"
            para = False
        if items is not None:
            yield f"<li>{_inline(' '.join(items))}</li></{tag}>"
            items = None

    while (line := lines.peek()) is not None:
        lines.take()
        fence = _FENCE_RE.fullmatch(line)
        if fence:
            yield from flush()
            marker, language = fence.group(1), fence.group(2)
            body = []
            while (inner := lines.peek()) is not None and not inner.strip().startswith(marker):
                body.append(inner)
                lines.take()
            lines.take()  # the closing fence
            cls = f' class="language-{html.escape(language)}"' if language else ""
            yield begin(f"<pre><code{cls}>{html.escape(chr(10).join(body))}</code></pre>")
            continue
        heading = _HEADING_RE.fullmatch(line.strip())
        listed = _LIST_RE.fullmatch(line)
        if not line.strip():
            yield from flush()
        elif heading:
            yield from flush()
            level = min(len(heading.group(1)) + 2, 6)  # below the page's own headings
            yield begin(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.lstrip().startswith(">") and depth < _QUOTE_DEPTH:
            yield from flush()
            quoted = [line.lstrip()[1:].removeprefix(" ")]
            while (inner := lines.peek()) is not None and inner.lstrip().startswith(">"):
                quoted.append(inner.lstrip()[1:].removeprefix(" "))
                lines.take()
            inside = markdown_html(chr(10).join(quoted), depth + 1)
            yield begin(f"<blockquote>{inside}</blockquote>")
        elif listed:
            if para:
                yield from flush()
            if items is None:
                tag = "ul" if listed.group(1) is None else "ol"
                yield begin(f"<{tag}>")
            else:
                yield f"<li>{_inline(' '.join(items))}</li>"
            items = [listed.group(2)]
        elif items is not None and line.startswith((" ", "\t")):
            items.append(line.strip())
        else:
            if items is not None:
                yield from flush()
            if para:
                yield "<br>\n" + _inline(line.strip())
            else:
                yield begin("<p>" + _inline(line.strip()))
                para = True
    yield from flush()


def _badge(kind: str) -> str:
    """A word for the element's kind (a reader's system may lack an emoji font)."""
    return f'<span class="badge">{html.escape(kind)}</span>'


def _element_html(view: ElementView, shared: dict[str, str] | None = None) -> str:
    """``shared``: the class that shows an image the page holds once in its style (see
    :func:`_shared_images`), by its ``data:`` URL."""
    name = html.escape(view.name)
    target = view.href or ""
    if not (ee.safe_url(target) or (view.type == "image" and target.startswith("data:image/"))):
        target = ""  # a script's URL (the element's own, from the client): no link
    href = html.escape(target)
    if view.left_out and view.text is None and view.table is None:
        return (
            f'<div class="element"><em>{name} ({html.escape(view.type)}: its file is not in'
            " this page; export with -o DIR to keep it)</em></div>"
        )
    if not target and not view.left_out:
        return f'<div class="element"><em>{name} ({html.escape(view.type)}, not stored)</em></div>'
    if view.type == "image" and view.embed:
        shown = (shared or {}).get(target)
        if shown is not None:
            return f'<div class="element"><img class="{shown}" alt="{name}"></div>'
        return f'<div class="element"><img src="{href}" alt="{name}"></div>'
    if view.type in ("audio", "video") and not re.match(r"[a-z][a-z0-9+.-]*:|/", target):
        # A file beside the page plays in it (the app's page links instead: its
        # policy loads nothing but its own images).
        media = f'<{view.type} controls preload="metadata" src="{href}"></{view.type}>'
        link = f'<div class="title">{_badge(view.type)}<a href="{href}">{name}</a></div>'
        return f'<div class="element">{link}{media}</div>'
    if view.text is not None:
        if view.code_language:
            lang = html.escape(view.code_language)
            body = f'<pre><code class="language-{lang}">{html.escape(view.text)}</code></pre>'
        else:
            body = f'<div class="text">{markdown_html(view.text)}</div>'
        cut = ""
        if view.cut:
            whole = f'<a href="{href}">the whole text</a>' if target else "export with -o DIR"
            cut = f" (cut here: {whole})"
        return (
            f'<div class="element"><div class="title">{_badge("text")}{name}{cut}</div>{body}</div>'
        )
    if view.table is not None:
        csv = html.escape(view.csv_href or target)
        note = html.escape(ee.table_note(view.table))
        if view.csv_href:
            whole = f'all of it in <a href="{csv}">{name}.csv</a>'
        elif target:
            whole = f'all of it in <a href="{csv}">{name}</a>'
        else:
            whole = "all of it with export -o DIR"
        return (
            f'<div class="element"><div class="title">{_badge("table")}{name} ({note}; '
            f"{whole})</div>"
            f"{ee.html_table(view.table)}</div>"
        )
    if view.table_note is not None:
        note = html.escape(view.table_note)
        link = f'<a href="{href}">{name}</a>'
        return f'<div class="element">{_badge("table")}{link} <em>({note})</em></div>'
    if view.type == "plotly":
        if view.chart_href:
            # The page that draws it, shown in place: the export's own page runs no
            # script, the chart's page runs plotly.js on the figure's data alone.
            chart = html.escape(view.chart_href)
            title = f'<div class="title">{_badge("chart")}<a href="{chart}">{name}</a></div>'
            frame = f'<iframe class="chart" src="{chart}" title="{name}" loading="lazy"></iframe>'
            return f'<div class="element">{title}{frame}</div>'
        link = f'<a href="{href}">{name} (Plotly figure, JSON)</a>'
        return f'<div class="element">{_badge("chart")}{link}</div>'
    return f'<div class="element">{_badge(view.type)}<a href="{href}">{name}</a></div>'


_SHAREABLE_RE = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=]*", re.ASCII)


def _shared_images(views: dict[str, ElementView]) -> tuple[dict[str, str], str]:
    """The ``data:`` URLs that more than one image of the page shows (one image sent
    with several messages), each given a class, and the style that holds each once:
    ``content: url(...)`` puts it in every ``<img>`` of that class, without a script
    and without a file, so the page still stands alone, holding its bytes once. A URL
    shown once stays the image's ``src``."""
    counts: dict[str, int] = {}
    for view in views.values():
        target = view.href or ""
        if view.type == "image" and view.embed and _SHAREABLE_RE.fullmatch(target):
            counts[target] = counts.get(target, 0) + 1
    shared: dict[str, str] = {}
    rules = []
    for target, count in counts.items():
        if count > 1:
            shared[target] = f"image-{len(shared) + 1}"
            rules.append(f'.{shared[target]}{{content:url("{target}")}}\n')
    return shared, "".join(rules)


def render_html(thread: dict[str, Any], views: dict[str, ElementView]) -> str:
    """The conversation as one HTML page (``views``: what each element shows as)."""
    return "".join(html_pieces(thread, views))


_PIECE = 1 << 18
"""How much of a long text is escaped at a time (see :func:`_escaped`)."""


def _escaped(text: str, *, strip: bool = False) -> Iterator[str]:
    """``html.escape(text)`` (of ``text.strip()`` with ``strip``) in pieces of at most
    :data:`_PIECE` characters of ``text`` (escaping is per character, so the pieces join
    to the whole): a step's 20 MB output is never held escaped whole beside itself."""
    start, end = 0, len(text)
    if strip:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
    for at in range(start, end, _PIECE):
        yield html.escape(text[at : min(at + _PIECE, end)])


def html_pieces(thread: dict[str, Any], views: dict[str, ElementView]) -> Iterator[str]:
    """:func:`render_html`'s page as the pieces it is made of, in order, for a writer
    that puts them in a file one after another: the page is never held whole (nor each
    message with everything nested in it, joined at every level), only the thread it is
    made from and one piece at a time."""
    steps: list[dict[str, Any]] = thread.get("steps") or []
    present = {s["id"] for s in steps}
    children = step_children(steps)
    owned: dict[str | None, list[ElementView]] = {}
    for element in thread.get("elements") or []:
        owner = text_or_none(element.get("forId"))
        owner = owner if owner in present else None
        view = views.get(str(element["id"]))
        if view is not None:
            owned.setdefault(owner, []).append(view)
    author = str(thread.get("userIdentifier") or "User")
    title = str(thread.get("name") or "Untitled conversation")
    shared, images_style = _shared_images(views)
    opening = '<div class="bubble">'

    def extras(step: dict[str, Any]) -> Iterator[str]:
        for view in owned.get(step["id"], []):
            yield _element_html(view, shared)
        fb = step.get("feedback")
        if fb:
            mark = {1: "👍 helpful", 0: "👎 not helpful"}.get(fb.get("value"), "rated")
            yield f'<p class="feedback">{_badge(mark)}'
            yield from _escaped(str(fb.get("comment") or ""), strip=True)  # in pieces
            yield "</p>"

    def render(
        step: dict[str, Any], nested: bool = False, lead: list[str] | None = None
    ) -> Iterator[str]:
        """The step's pieces; ``lead`` (a message's): a run's tool steps, folded into
        the start of its bubble when it is the run's last message."""
        kind = text_or_none(step.get("type"))
        if kind in MESSAGE_TYPES:
            user = kind == "user_message"
            who = author if user else str(step.get("name") or "Assistant")
            stamp = html.escape(when(step.get("createdAt") or step.get("start")))
            css = "user" if user else "assistant"
            # Tool steps fold into the bubble; the answers (and the runs that made
            # them: Chainlit 2 hangs the run under the user's message) follow it.
            kids = children.get(step["id"], [])
            following = (*MESSAGE_TYPES, "run")
            yield f'<section class="msg {css}"><div class="who">{html.escape(who)} · {stamp}</div>'
            yield opening
            yield from lead or ()
            for child in kids:
                if child.get("type") not in following:
                    yield from render(child, nested=True)
            yield from markdown_pieces(str(step.get("output") or "").strip())
            yield from extras(step)
            yield "</div></section>"
            for child in kids:
                if child.get("type") in following:
                    yield from render(child)
            return
        if kind == "run":
            # Invisible in Chainlit's UI: its tool steps go into the answer it made.
            kids = children.get(step["id"], [])
            tool_steps = [c for c in kids if c.get("type") not in (*MESSAGE_TYPES, "run")]
            messages = [c for c in kids if c not in tool_steps]
            folded = [piece for c in tool_steps for piece in render(c, nested=True)]
            for n, child in enumerate(messages):
                if folded and n == len(messages) - 1:
                    if child.get("type") in MESSAGE_TYPES:
                        yield from render(child, lead=folded)
                        folded = []
                        continue
                    # A run in a run (rare, and small): into its first bubble, if any.
                    piece = "".join(render(child))
                    if opening in piece:
                        piece = piece.replace(opening, opening + "".join(folded), 1)
                        folded = []
                    yield piece
                    continue
                yield from render(child)
            for rest in ("".join(folded), "".join(extras(step))):  # a run's: rarely any
                if rest:
                    yield f'<section class="msg assistant">{opening}{rest}</div></section>'
            return
        label = f"{step.get('name') or kind} ({kind})" + (" ⚠️ error" if step.get("isError") else "")
        if not nested:
            yield '<section class="msg assistant"><div class="bubble">'
        yield f'<details class="step"><summary>{html.escape(label)}</summary>'
        for field, heading in (("input", "Input"), ("output", "Output")):
            if step.get(field):
                yield f'<div class="label">{heading}</div><pre><code>'
                yield from _escaped(str(step[field]))
                yield "</code></pre>"
        yield from extras(step)
        for child in children.get(step["id"], []):
            yield from render(child, nested=True)
        yield "</details>"
        if not nested:
            yield "</div></section>"

    created = html.escape(when(thread.get("createdAt")))
    tags = ", ".join(str(t) for t in thread.get("tags") or [])
    meta = f"{html.escape(author)} · {created}" + (f" · {html.escape(tags)}" if tags else "")
    yield (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_POLICY}">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="filelayer-thread" content="{html.escape(str(thread["id"]))}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}{images_style}</style>\n</head>\n"
        f"<body>\n<header><h1>{html.escape(title)}</h1><p>{meta}</p></header>\n"
        "<main>\n"
    )
    first = True
    for top in children.get(None, []):
        if not first:
            yield "\n"
        first = False
        yield from render(top)
    loose = owned.get(None, [])
    if loose:
        yield ("\n" if not first else "") + '<section class="attachments"><h2>Attachments</h2>'
        for v in loose:
            yield "\n" + _element_html(v, shared)
        yield "\n</section>"
    yield "\n</main>\n</body>\n</html>\n"
