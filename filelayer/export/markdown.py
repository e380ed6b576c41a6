"""Rendering a thread as Markdown that reads well on GitHub.

Pure functions over the ``ThreadDict`` that :meth:`ArchiveStore.get_thread` returns, so
an export is exactly what the UI showed. Output depends only on the thread's data: an
unchanged archive exports to byte-identical files.
"""

from __future__ import annotations

import bisect
import json
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

from .._time import when
from ..format import codec as _codec
from ..format.ids import slug
from ..format.journal import MESSAGE_TYPES, text_or_none
from ..format.tree import step_children
from .elements import safe_url

IMAGE_TYPES = frozenset(["image"])
_FEEDBACK_MARK = {1: "👍", 0: "👎"}


def file_stem(thread: dict[str, Any], *, whole_id: bool = False) -> str:
    """``2026-11-25-how-do-i-bake-bread-5f0c6c1e``: sorts by date, stable across runs.

    Made of checked parts only, since a file is named after it: the day when the
    creation time starts with one (a manifest may hold anything: ``../../``, an absolute
    path), the name's slug, and the id (a valid id: one path component), shortened to
    its first 8 characters only when it is a UUID (other ids, ``conversation-1`` and
    ``conversation-2``, would otherwise share a file). ``whole_id``: the whole id even
    then, for a thread whose short name another thread of the same export has (a
    client chooses its thread ids, and can choose one that begins like another's)."""
    created = str(thread.get("createdAt") or "")
    day = created[:10] if _DAY_RE.match(created) else "undated"
    thread_id = str(thread["id"])
    short = thread_id[:8] if _UUID_RE.fullmatch(thread_id) and not whole_id else thread_id
    return f"{day}-{slug(thread.get('name') or '', 50, 'untitled')}-{short}"


_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_UUID_RE = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)


def _yaml_str(value: object) -> str:
    return _no_tags(json.dumps("" if value is None else str(value), ensure_ascii=False))


def _no_tags(text: str) -> str:
    """JSON (a YAML flow value too) with every ``<`` as ``\\u003c``, the same string to a
    reader of either: a renderer without front matter shows it as Markdown text, where a
    name's ``<details>`` or ``<img onerror>`` was HTML."""
    return text.replace("<", "\\u003c")


def front_matter(thread: dict[str, Any]) -> str:
    tags = thread.get("tags") or []
    lines = [
        "---",
        f"id: {_yaml_str(thread['id'])}",
        f"name: {_yaml_str(thread.get('name'))}",
        f"author: {_yaml_str(thread.get('userIdentifier'))}",
        f"created: {_yaml_str(thread.get('createdAt'))}",
        f"updated: {_yaml_str(thread.get('updatedAt') or thread.get('createdAt'))}",
        f"tags: {_no_tags(json.dumps([str(t) for t in tags], ensure_ascii=False))}",
        "---",
    ]
    return "\n".join(lines) + "\n"


def fence(text: str, language: str = "") -> str:
    """``text`` as code, in a fence that nothing in it closes, after a language of word
    characters only (a language is an info string, on the fence's own line: a new line
    or a backtick there ended it, and the code's first line was Markdown)."""
    text = _newlines(text)
    # One backtick more than the longest run in it, found in one pass (growing the
    # fence a backtick at a time took time quadratic in that run).
    longest = max((len(run) for run in _BACKTICKS_RE.findall(text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{_LANGUAGE_DROPPED_RE.sub('', language)}\n{text}\n{ticks}"


_LANGUAGE_DROPPED_RE = re.compile(r"[^\w+#.-]")
_BACKTICKS_RE = re.compile(r"`{3,}")


def _quote(text: str) -> str:
    """``text`` (defused: its lines end at new lines only) as a block quote, a ``>`` put
    before each line a renderer sees: at new lines only, as ``str.splitlines`` would not
    (it also ends a line at a form feed or a line separator, which CommonMark does not,
    and a fence kept whole then closed early, leaving what it held as HTML)."""
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def render_markdown(
    thread: dict[str, Any],
    element_links: dict[str, str] | None = None,
    element_blocks: dict[str, str] | None = None,
) -> str:
    """The conversation as Markdown.

    ``element_links`` maps element ids to the relative path of their exported copy;
    elements without one link to their external ``url``, if any. ``element_blocks``
    maps element ids to the Markdown shown instead of a link (a text shown inline, a
    dataframe as a table: see :mod:`filelayer.export.bundle`).
    """
    links = element_links or {}
    blocks = element_blocks or {}
    steps: list[dict[str, Any]] = thread.get("steps") or []
    present = {s["id"] for s in steps}
    children = step_children(steps)
    elements_by_step: dict[str | None, list[dict[str, Any]]] = {}
    for element in thread.get("elements") or []:
        owner = text_or_none(element.get("forId"))
        elements_by_step.setdefault(owner if owner in present else None, []).append(element)

    title = plain(str(thread.get("name") or "Untitled conversation"))
    out = [front_matter(thread), f"# {title}\n"]
    author = str(thread.get("userIdentifier") or "User")

    def render(step: dict[str, Any], depth: int) -> None:
        kind = text_or_none(step.get("type"))
        if kind in MESSAGE_TYPES:
            who = author if kind == "user_message" else str(step.get("name") or "Assistant")
            stamp = plain(when(step.get("createdAt") or step.get("start")))
            out.append(f"**{plain(who)}** · {stamp}\n")
            text = defused(str(step.get("output") or "").strip())
            if text:
                out.append(text + "\n")
            out.extend(_elements(elements_by_step.get(step["id"], []), links, blocks))
            out.extend(_feedback(step))
            for child in children.get(step["id"], []):
                render(child, depth)
        elif kind == "run":
            # Run steps are invisible wrappers in Chainlit's UI: their messages show
            # at the top level; the rating Chainlit puts on them is shown after them.
            for child in children.get(step["id"], []):
                render(child, depth)
            out.extend(_elements(elements_by_step.get(step["id"], []), links, blocks))
            out.extend(_feedback(step))
        else:
            label = f"{step.get('name') or kind} ({kind})"
            if step.get("isError"):
                label += " ⚠️ error"
            out.append(f"<details>\n<summary>{_html_escape(_one_line(label))}</summary>\n")
            if step.get("input"):
                out.append("**Input**\n\n" + fence(str(step["input"]), _language(step)) + "\n")
            if step.get("output"):
                out.append("**Output**\n\n" + fence(str(step["output"])) + "\n")
            out.extend(_elements(elements_by_step.get(step["id"], []), links, blocks))
            out.extend(_feedback(step))
            for child in children.get(step["id"], []):
                render(child, depth + 1)
            out.append("</details>\n")

    for top in children.get(None, []):
        render(top, 0)
    loose = elements_by_step.get(None, [])
    if loose:
        out.append("## Attachments\n")
        out.extend(_elements(loose, links, blocks))
    # Each part ending in one new line; a part that does is not copied (a long message).
    page = "\n".join(_one_newline(part) for part in out)
    return _one_newline(page)


def _one_newline(text: str) -> str:
    """``text.rstrip("\\n") + "\\n"``, without a copy when it already ends so."""
    if text.endswith("\n") and not text.endswith("\n\n"):
        return text
    return text.rstrip("\n") + "\n"


def _language(step: dict[str, Any]) -> str:
    if step.get("language"):
        return str(step["language"])
    return "json" if str(step.get("showInput") or "").lower() == "json" else ""


def _one_line(text: str) -> str:
    """A name or a time put in a heading or a speaker's line: one line, whatever it
    holds (a thread's name is its first message, new lines included)."""
    return (
        " ".join(text.split())
        if any(c in text for c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")
        else text
    )


_LINE_END_RE = re.compile(r"\r\n?")


def _newlines(text: str) -> str:
    """``text`` with its line ends as new lines: CommonMark also ends a line at a
    carriage return, alone or before a new line, so a defuser that split at new lines
    only saw one line where a renderer saw several."""
    return _LINE_END_RE.sub("\n", text) if "\r" in text else text


# A fence a renderer opens whatever it is in: at most 3 spaces, and, for backticks, an
# info string without one.
_OPENER_RE = re.compile(r"( *)(`{3,}(?=[^`]*$)|~{3,})")
_CLOSER_RE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*$")
# Anything that may be a fence in some container: after spaces, tabs, block quote and
# list markers.
_FENCE_LIKE_RE = re.compile(r"[ \t]*(?:(?:>|[-+*]|\d{1,9}[.)])[ \t]*)*(`|~)(?=\1\1)")
# What starts an HTML tag, a comment, a declaration or a processing instruction.
_TAG_START_RE = re.compile(r"<[A-Za-z/!?]")
_AUTOLINK_RE = re.compile(
    r"<(?:[A-Za-z][A-Za-z0-9+.-]{1,31}:[^\x00-\x20<>]*"
    r"|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)>"
)
# Emphasis followed, past any spacing (a line end, a no-break space, an invisible
# character), by an entity or a sign (anything but an ASCII letter or digit: dots that
# look alike include letters, ``ꞏ`` and ``ᐧ``), with a time on the line or the next:
# a speaker's line is ``**Name** · 2026-03-01 10:01 UTC``, and ``__Name__ &middot;
# 10:01`` looks the same. The time keeps ordinary emphasis (``**Step 1** — install``,
# ``**Done** ✅``) as written.
_SPEAKER_LIKE_RE = re.compile(
    r"[*_](?:\s|[\u00ad\u200b-\u200f\u2060\ufeff])*(?:&[#\w]+;|[^A-Za-z0-9\s*_])"
)
_TIME_RE = re.compile(r"[0-9][:：][0-9]{2}")
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def defused(text: str) -> str:
    """A message's Markdown, kept as written, except what would forge the export's own
    structure or hide what follows: raw HTML (``<!--`` hid every later message in a
    renderer, an unclosed ``<details>`` in a browser), a line that renders like a
    speaker's line (``**Assistant** · …``, or ``__Assistant__ &middot; …``), and a fence
    left open. They are escaped: a reader sees them as typed.

    Code is never touched, since an escape would show there, but only code that every
    renderer agrees is code: a fence not in a list item, or one whose lines all stay in
    it (a list item ends at a line less indented, and its fence with it), and code spans
    within a line that no earlier backtick may have opened. Any other fence is broken
    (shown as typed), and its lines are treated as text: a line-by-line reading that
    took a fence for one where a renderer did not (or missed one it saw) let the
    renderer find HTML in what it read as code."""
    lines = _newlines(text).split("\n")
    out: list[str] = []
    spans = True  # no backtick left open: a code span within a line is one
    budget = 4 * len(lines) + 1000  # lines that indented fences may look at, in all
    i = 0
    while i < len(lines):
        opener = _OPENER_RE.match(lines[i])
        if opener and len(opener.group(1)) > 3 and i and lines[i - 1].strip(" \t"):
            # Indented as code, right after a line of text: outside a list item that
            # line's paragraph goes on over it (text, where HTML acts).
            opener = None
        end: int | None = None
        if opener and (budget > 0 or not opener.group(1)):
            end, seen = _fence_end(lines, i, len(opener.group(1)), opener.group(2))
            if opener.group(1):
                budget -= seen - i
        if opener and end is not None:
            out.extend(lines[i : end + 1])
            if end == len(lines):  # left open, it would run on over every later message
                out.append(opener.group(2))
            i, spans = end + 1, True
            continue
        line = lines[i]
        fence = _FENCE_LIKE_RE.match(line)
        if fence:
            line = line[: fence.start(1)] + "\\" + line[fence.start(1) :]
        following = lines[i + 1] if i + 1 < len(lines) else ""
        pair = line + "\n" + following
        emphasis = bool(_SPEAKER_LIKE_RE.search(pair)) and bool(_TIME_RE.search(pair))
        if not line.strip(" \t"):
            spans = True
        line, spans = _inline_defused(line, spans, emphasis)
        out.append(line)
        i += 1
    return "\n".join(out)


def _indent(line: str) -> int:
    """The columns of a line's indentation (a tab goes to the next multiple of 4)."""
    column = 0
    for char in line:
        if char == " ":
            column += 1
        elif char == "\t":
            column += 4 - column % 4
        else:
            break
    return column


def _fence_end(lines: list[str], start: int, indent: int, mark: str) -> tuple[int | None, int]:
    """The line that closes the fence ``lines[start]`` opens (``len(lines)``: none, and
    the fence is not indented), or ``None`` when a renderer may read the fence
    otherwise: indented, it may be in a list item, which ends at a line less indented
    than its text, or closes at an indentation that only a list item allows. Then the
    line where the look stopped (a bound on the work keeps the whole linear)."""
    for j in range(start + 1, len(lines)):
        line = lines[j]
        if not line.strip(" \t"):
            continue
        depth = _indent(line)
        if depth < indent:
            return None, j
        closer = _CLOSER_RE.match(line)
        if closer and closer.group(1)[0] == mark[0] and len(closer.group(1)) >= len(mark):
            if depth <= 3 or depth == indent:
                # At the opening's indentation, every line from the opening to here is
                # code however a renderer reads it: an indented code block outside a
                # list, a fence (or an indented block) in a list item, which no line
                # less indented than the opening has ended (``1. Install:`` and an
                # indented fence, as assistants write them).
                return j, j
            if depth <= indent + 3:
                return None, j
    return (len(lines) if indent == 0 else None), len(lines)


def _inline_defused(line: str, spans: bool, emphasis: bool) -> tuple[str, bool]:
    """One line of text with its HTML escaped (and its emphasis, when ``emphasis``), past
    code spans and autolinks; and whether no backtick was left open. With ``spans``
    false, an earlier line left one that may close here, so nothing is code."""
    out: list[str] = []
    open_tick = False
    runs = _tick_runs(line) if spans and "`" in line else {}
    i, size = 0, len(line)
    while i < size:
        char = line[i]
        if char == "\\" and i + 1 < size and line[i + 1] in _PUNCTUATION:
            out.append(line[i : i + 2])
            i += 2
        elif char == "`":
            run = i
            while run < size and line[run] == "`":
                run += 1
            ends = runs.get(run - i, [])
            after = bisect.bisect_right(ends, run)
            # The closing run ends past its own length from where the opening one ends.
            close = ends[after] if spans and after < len(ends) else -1
            if close < 0:
                open_tick = True
                out.append(line[i:run])
                i = run
            else:
                out.append(line[i:close])
                i = close
        elif char == "<":
            link = _AUTOLINK_RE.match(line, i)
            if link:
                out.append(link.group())
                i = link.end()
            else:
                out.append("\\<" if _TAG_START_RE.match(line, i) else "<")
                i += 1
        else:
            plain = _PLAIN_RUN_RE.match(line, i)  # kept as one piece, not a char each
            if plain:
                out.append(plain.group())
                i = plain.end()
            else:
                out.append("\\" + char if emphasis and char in "*_" else char)
                i += 1
    return "".join(out), spans and not open_tick


_PLAIN_RUN_RE = re.compile(r"[^\\`<*_]+")
"""Characters :func:`_inline_defused` keeps as they are, whatever comes next."""


def _tick_runs(line: str) -> dict[int, list[int]]:
    """Where each run of backticks in ``line`` ends, by its length: a code span closes
    at the next run of its opening's length (one look-up each, however many runs)."""
    runs: dict[int, list[int]] = {}
    for run in _TICKS_RE.finditer(line):
        runs.setdefault(run.end() - run.start(), []).append(run.end())
    return runs


_TICKS_RE = re.compile(r"`+")


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _elements(
    elements: Iterable[dict[str, Any]], links: dict[str, str], blocks: dict[str, str]
) -> list[str]:
    lines = []
    for element in elements:
        if element["id"] in blocks:
            lines.append(blocks[element["id"]] + "\n")
            continue
        name = str(element.get("name") or element.get("type") or "file")
        url = element.get("url")
        target = links.get(element["id"]) or (
            url if isinstance(url, str) and safe_url(url) else None
        )
        if not target:
            lines.append(f"_{plain(name)} ({plain(str(element.get('type')))}, not stored)_\n")
        elif text_or_none(element.get("type")) in IMAGE_TYPES:
            lines.append(f"![{plain(name)}]({link_target(str(target))})\n")
        else:
            lines.append(f"📎 [{plain(name)}]({link_target(str(target))})\n")
    return lines


_SIGN_RE = re.compile(r"([\\`*_\[\]<>&!~|#])")


def plain(text: str) -> str:
    """A name, a type or a time as text on one line of the Markdown: every sign that
    could start Markdown or HTML there (a tag, a comment, emphasis, a link, an entity)
    escaped, and its line breaks made spaces, whatever it holds."""
    return _SIGN_RE.sub(r"\\\1", _one_line(text))


def link_target(target: str) -> str:
    """A link's target with everything that could end it (a space, a line break, a
    parenthesis, an angle bracket) percent-encoded."""
    return urllib.parse.quote(target, safe="/:?#@!$&'*+,;=%~")


def _feedback(step: dict[str, Any]) -> list[str]:
    fb = step.get("feedback")
    if not fb:
        return []
    mark = _FEEDBACK_MARK.get(fb.get("value"), "")
    comment = str(fb.get("comment") or "").strip()
    return [_quote(defused(f"{mark} {comment}".strip())) + "\n"]


def render_json(thread: dict[str, Any], *, ensure_ascii: bool = False) -> str:
    """The thread as JSON; ``ensure_ascii`` for a stream that cannot hold every
    character (the escapes keep it JSON)."""
    text = _codec.any_size(
        lambda: _codec.any_depth(
            lambda: json.dumps(thread, ensure_ascii=ensure_ascii, indent=2, sort_keys=True)
        )
    )
    return text + "\n"
