"""The reading commands: ``list``, ``show`` and ``stats``.

They print what the archive holds, through the same store calls the Chainlit adapter
makes, and change nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from .._time import time_key, when
from ..format.journal import MESSAGE_TYPES, text_or_none
from ..format.tree import step_children
from ._common import holds_any_text, open_store, printable, require_thread, selected, stdout


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = stdout()
    rows = list(selected(store, args))
    if args.json:
        ascii_only = not holds_any_text(out)
        for s in rows:
            record = {
                "id": s.id,
                "name": s.name,
                "author": s.user_identifier,
                "createdAt": s.created_at,
                "updatedAt": s.changed,
                "tags": s.tags,
                "messages": len(s.texts),
            }
            out.write(json.dumps(record, ensure_ascii=ascii_only) + "\n")
        return 0 if rows else 1
    table = [("ID", "UPDATED", "AUTHOR", "MSGS", "NAME")]
    table += [
        (
            s.id,
            when(s.activity),
            printable(s.user_identifier or "-"),
            str(len(s.texts)),
            printable(s.name or ""),
        )
        for s in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    limit = shutil.get_terminal_size((120, 20)).columns if out.isatty() else None
    for row in table:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        out.write((line[:limit] if limit else line).rstrip() + "\n")
    return 0 if rows else 1


def cmd_show(args: argparse.Namespace) -> int:
    store = open_store(args)
    thread = require_thread(store, args.thread)
    out = stdout()
    # Every name and text is a user's: printed without its control characters.
    out.write(f"{printable(thread.get('name') or 'Untitled')}  ({thread['id']})\n")
    author = printable(thread.get("userIdentifier") or "-")
    out.write(f"by {author}, created {printable(when(thread['createdAt']))}\n")
    present = {s["id"] for s in thread["steps"]}
    children = step_children(thread["steps"])
    elements: dict[str | None, list[str]] = {}
    for element in thread["elements"]:
        owner = text_or_none(element.get("forId"))
        owner = owner if owner in present else None
        label = printable(f"📎 {element.get('name')} ({element.get('type')})")
        elements.setdefault(owner, []).append(label)

    def show(step: dict[str, Any], level: int) -> None:
        indent = "  " * level
        kind = text_or_none(step.get("type"))
        if kind != "run":  # runs are invisible wrappers, as in Chainlit's UI
            if kind == "user_message":
                who = str(thread.get("userIdentifier") or "user")
            elif kind in MESSAGE_TYPES:
                who = str(step.get("name") or "assistant")
            else:
                who = f"↳ {step.get('name') or kind} ({kind})"
            stamp = printable(when(step.get("createdAt") or step.get("start")))
            out.write(f"\n{indent}[{stamp}] {printable(who)}:\n")
            for line in str(step.get("output") or "").splitlines() or [""]:
                out.write(f"{indent}  {printable(line)}".rstrip() + "\n")
        inner = level + 1 if kind not in MESSAGE_TYPES and kind != "run" else level
        for child in children.get(step["id"], []):
            show(child, inner)
        for line in elements.get(step["id"], []):
            out.write(f"{indent}  {line}\n")
        fb = step.get("feedback")
        if fb:
            mark = "👍" if fb.get("value") == 1 else "👎"
            out.write(f"{indent}  {mark} {printable(fb.get('comment') or '')}".rstrip() + "\n")

    for top in children.get(None, []):
        show(top, 0)
    for line in elements.get(None, []):
        out.write(f"\n{line}\n")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    threads = steps = elements = 0
    created = []
    for thread_id in store.thread_ids():
        state = store.read_state(thread_id)
        doc = store.read_manifest(thread_id) or {}
        threads += 1
        steps += len(state.steps)
        elements += len(state.live_elements())
        if isinstance(doc.get("createdAt"), str) and doc["createdAt"]:
            created.append(doc["createdAt"])
    size = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    user_count = sum(1 for _ in store.iter_users())
    out = stdout()
    out.write(f"root      {store.root}\n")
    out.write(f"threads   {threads}\nsteps     {steps}\nelements  {elements}\n")
    out.write(f"users     {user_count}\nbytes     {size}\n")
    out.write(f"oldest    {printable(min(created, key=time_key)) if created else '-'}\n")
    out.write(f"newest    {printable(max(created, key=time_key)) if created else '-'}\n")
    return 0
