"""The steps of a thread as the tree their ``parentId`` makes, for what shows a thread
(the terminal, Markdown and HTML exports).

``parentId`` comes from the client (Chainlit takes it from a message's payload), so the
tree may be anything: a parent that is not there, a step its own parent, a cycle, a
chain thousands deep. Each step is shown exactly once: a step whose parent is missing,
or whose line of parents loops, is a root, and a chain deeper than :data:`MAX_DEPTH`
starts again at the top (what shows a thread recurses once per level)."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32
"""Levels of nesting shown; Chainlit's own trees are a few deep."""


def step_children(steps: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Each step under its parent's id (``None``: the roots), in the order of ``steps``."""
    present = {step["id"] for step in steps}
    parent_of: dict[str, str | None] = {}
    for step in steps:
        parent = step.get("parentId")
        ok = isinstance(parent, str) and parent in present and parent != step["id"]
        parent_of[step["id"]] = parent if ok else None
    depth: dict[str, int] = {}
    for start in parent_of:
        while start not in depth:
            path: list[str] = []
            seen: set[str] = set()
            node: str | None = start
            while node is not None and node not in depth and node not in seen:
                seen.add(node)
                path.append(node)
                node = parent_of[node]
            if node is not None and node in seen:  # a loop of parents: cut it here
                parent_of[node] = None
                continue  # and walk again
            level = -1 if node is None else depth[node]
            for step_id in reversed(path):
                level += 1
                if level > MAX_DEPTH:
                    parent_of[step_id], level = None, 0
                depth[step_id] = level
    children: dict[str | None, list[dict[str, Any]]] = {}
    for step in steps:
        children.setdefault(parent_of[step["id"]], []).append(step)
    return children
