"""The reading commands: ``list``, ``show`` and ``stats``.

They print what the archive holds, through the same store calls the Chainlit adapter
makes, and change nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from .._time import when
from ..format.journal import MESSAGE_TYPES
from ._common import open_store, require_thread, selected, stdout


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = stdout()
    rows = list(selected(store, args))
    if args.json:
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
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return 0 if rows else 1
    table = [("ID", "UPDATED", "AUTHOR", "MSGS", "NAME")]
    table += [
        (s.id, when(s.activity), s.user_identifier or "-", str(len(s.texts)), s.name or "")
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
    out.write(f"{thread.get('name') or 'Untitled'}  ({thread['id']})\n")
    out.write(f"by {thread.get('userIdentifier') or '-'}, created {when(thread['createdAt'])}\n")
    present = {s["id"] for s in thread["steps"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for step in thread["steps"]:
        parent = step.get("parentId")
        children.setdefault(parent if parent in present else None, []).append(step)
    elements: dict[str | None, list[str]] = {}
    for element in thread["elements"]:
        owner = element.get("forId") if element.get("forId") in present else None
        elements.setdefault(owner, []).append(f"📎 {element.get('name')} ({element.get('type')})")

    def show(step: dict[str, Any], level: int) -> None:
        indent = "  " * level
        kind = step["type"]
        if kind != "run":  # runs are invisible wrappers, as in Chainlit's UI
            if kind == "user_message":
                who = str(thread.get("userIdentifier") or "user")
            elif kind in MESSAGE_TYPES:
                who = str(step.get("name") or "assistant")
            else:
                who = f"↳ {step.get('name') or kind} ({kind})"
            out.write(f"\n{indent}[{when(step.get('createdAt') or step.get('start'))}] {who}:\n")
            for line in str(step.get("output") or "").splitlines() or [""]:
                out.write(f"{indent}  {line}".rstrip() + "\n")
        inner = level + 1 if kind not in MESSAGE_TYPES and kind != "run" else level
        for child in children.get(step["id"], []):
            show(child, inner)
        for line in elements.get(step["id"], []):
            out.write(f"{indent}  {line}\n")
        fb = step.get("feedback")
        if fb:
            mark = "👍" if fb.get("value") == 1 else "👎"
            out.write(f"{indent}  {mark} {fb.get('comment') or ''}".rstrip() + "\n")

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
        if doc.get("createdAt"):
            created.append(str(doc["createdAt"]))
    size = sum(p.stat().st_size for p in store.root.rglob("*") if p.is_file())
    user_count = sum(1 for _ in store.iter_users())
    out = stdout()
    out.write(f"root      {store.root}\n")
    out.write(f"threads   {threads}\nsteps     {steps}\nelements  {elements}\n")
    out.write(f"users     {user_count}\nbytes     {size}\n")
    out.write(f"oldest    {min(created) if created else '-'}\n")
    out.write(f"newest    {max(created) if created else '-'}\n")
    return 0
