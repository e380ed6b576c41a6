"""Rendering a thread as Markdown that reads well on GitHub.

Pure functions over the ``ThreadDict`` that :meth:`ArchiveStore.get_thread` returns, so
an export is exactly what the UI showed. Output depends only on the thread's data: an
unchanged archive exports to byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .._time import when
from ..format.ids import slug
from ..format.journal import MESSAGE_TYPES

IMAGE_TYPES = frozenset(["image"])
_FEEDBACK_MARK = {1: "👍", 0: "👎"}


def file_stem(thread: dict[str, Any]) -> str:
    """``2026-11-25-how-do-i-bake-bread-5f0c6c1e``: sorts by date, stable across runs."""
    day = str(thread.get("createdAt") or "")[:10] or "undated"
    return f"{day}-{slug(thread.get('name') or '', 50, 'untitled')}-{thread['id'][:8]}"


def _yaml_str(value: object) -> str:
    return json.dumps("" if value is None else str(value), ensure_ascii=False)


def front_matter(thread: dict[str, Any]) -> str:
    tags = thread.get("tags") or []
    lines = [
        "---",
        f"id: {_yaml_str(thread['id'])}",
        f"name: {_yaml_str(thread.get('name'))}",
        f"author: {_yaml_str(thread.get('userIdentifier'))}",
        f"created: {_yaml_str(thread.get('createdAt'))}",
        f"updated: {_yaml_str(thread.get('updatedAt') or thread.get('createdAt'))}",
        f"tags: {json.dumps([str(t) for t in tags], ensure_ascii=False)}",
        "---",
    ]
    return "\n".join(lines) + "\n"


def _fence(text: str, language: str = "") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{language}\n{text}\n{ticks}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


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
    children: dict[str | None, list[dict[str, Any]]] = {}
    for step in steps:
        parent = step.get("parentId")
        children.setdefault(parent if parent in present else None, []).append(step)
    elements_by_step: dict[str | None, list[dict[str, Any]]] = {}
    for element in thread.get("elements") or []:
        owner = element.get("forId")
        elements_by_step.setdefault(owner if owner in present else None, []).append(element)

    out = [front_matter(thread), f"# {thread.get('name') or 'Untitled conversation'}\n"]
    author = str(thread.get("userIdentifier") or "User")

    def render(step: dict[str, Any], depth: int) -> None:
        kind = step.get("type")
        if kind in MESSAGE_TYPES:
            who = author if kind == "user_message" else str(step.get("name") or "Assistant")
            out.append(f"**{who}** · {when(step.get('createdAt') or step.get('start'))}\n")
            text = str(step.get("output") or "").strip()
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
            out.append(f"<details>\n<summary>{_html_escape(label)}</summary>\n")
            if step.get("input"):
                out.append("**Input**\n\n" + _fence(str(step["input"]), _language(step)) + "\n")
            if step.get("output"):
                out.append("**Output**\n\n" + _fence(str(step["output"])) + "\n")
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
    return "\n".join(part.rstrip("\n") + "\n" for part in out).rstrip("\n") + "\n"


def _language(step: dict[str, Any]) -> str:
    if step.get("language"):
        return str(step["language"])
    return "json" if str(step.get("showInput") or "").lower() == "json" else ""


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
        target = links.get(element["id"]) or element.get("url")
        if not target:
            lines.append(f"_{name} ({element.get('type')}, not stored)_\n")
        elif element.get("type") in IMAGE_TYPES:
            lines.append(f"![{_link_text(name)}]({_link_target(str(target))})\n")
        else:
            lines.append(f"📎 [{_link_text(name)}]({_link_target(str(target))})\n")
    return lines


def _link_text(text: str) -> str:
    return text.replace("[", "(").replace("]", ")")


def _link_target(target: str) -> str:
    return target.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _feedback(step: dict[str, Any]) -> list[str]:
    fb = step.get("feedback")
    if not fb:
        return []
    mark = _FEEDBACK_MARK.get(fb.get("value"), "")
    comment = str(fb.get("comment") or "").strip()
    return [_quote(f"{mark} {comment}".strip()) + "\n"]


def render_json(thread: dict[str, Any]) -> str:
    return json.dumps(thread, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
