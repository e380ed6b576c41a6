"""A thread's live session state: kept beside the archive, out of the committed files.

Chainlit calls ``update_thread(metadata=…)`` with the whole user session every time a
session ends (``persist_user_session``): a new session id each time, the client type,
the user, the environment, and whatever the app keeps in ``cl.user_session`` (often a
second copy of the conversation). Merged into ``thread.json`` it would rewrite the
manifest at every visit and leave a diff in git for nothing.

So such a call (recognised by the keys Chainlit's ``to_persistable`` always sets) is
split: the chat profile and chat settings, which a resume on another clone should also
get back, stay in ``thread.json``, rewritten only when they change; the keys of sharing
(``is_shared``, ``shared_at``), a stale copy the session took when the thread was
reopened, are left out (only the share and unshare calls change them); the rest goes
to ``sessions/<thread id>.json``, a file the archive's ``.gitignore`` keeps out of git,
but the session's own id (:data:`NOT_KEPT`).
``get_thread`` returns both merged, so a resume on this machine gets its whole session
back; to the author only (or the app itself): Chainlit's share page hands the metadata to
every viewer of a shared thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from ..format import codec as _codec
from ..format.layout import SESSIONS_DIR

log = logging.getLogger("filelayer")

SESSION_MARKERS = frozenset(["chat_settings", "chat_profile", "client_type"])
"""Keys Chainlit's ``WebsocketSession.to_persistable`` always sets: a metadata update
that has all of them is a persisted user session."""

COMMITTED_KEYS = frozenset(["chat_settings", "chat_profile"])
"""Keys of a persisted session that stay in ``thread.json``."""

SHARING_KEYS = frozenset(["is_shared", "shared_at"])
"""Keys a persisted session carries as a stale copy (Chainlit copies a reopened thread's
metadata into the tab's session and saves it back when the tab closes): never taken
from a session. Sharing is decided by the share and unshare calls alone; a session
saved after an unshare would share the thread again."""


NOT_KEPT = frozenset(["id"])
"""Keys of a persisted session that are never kept: the websocket session's own id,
which ``cl.user_session`` copies in. ``get_thread`` gives the kept session back, and
Chainlit's share page hands it to every viewer of a shared thread, but that id is what
Chainlit's ``PUT /feedback`` takes to run the app's ``on_feedback`` in the author's live
session (a reconnecting tab keeps its id). A resume does not need it:
``cl.user_session`` sets the new session's own id."""


def is_session(metadata: dict[str, Any]) -> bool:
    return metadata.keys() >= SESSION_MARKERS


def split(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A persisted session's metadata: what goes to ``thread.json`` (the update to
    merge into it: the session's own keys there set to ``None``, which removes what an
    earlier version stored) and what goes to the session file."""
    dropped = COMMITTED_KEYS | SHARING_KEYS | NOT_KEPT
    local = {k: v for k, v in metadata.items() if k not in dropped}
    committed: dict[str, Any] = {k: None for k in local}
    committed.update({k: None for k in NOT_KEPT if k in metadata})
    committed.update({k: v for k, v in metadata.items() if k in COMMITTED_KEYS})
    return committed, local


def path(root: Path, thread_id: str) -> Path:
    """The session file of a thread (``thread_id`` already checked)."""
    return root / SESSIONS_DIR / f"{thread_id}.json"


def read(file: Path) -> dict[str, Any]:
    """The session kept for a thread; ``{}`` if none, or if the file is damaged (it is
    local state, never the only copy of anything committed)."""
    try:
        data = _fs.read_bytes(file)
    except OSError:
        return {}
    if not data:
        return {}
    try:
        doc = _codec.decode(data)
    except _codec.DecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if k not in NOT_KEPT}  # as an older release kept


def encode(session: dict[str, Any]) -> bytes:
    """The session file's bytes; ``ValueError`` for what JSON cannot hold (checked
    before the call that keeps it changes anything)."""
    _codec.check_depth(session)
    return _codec.encode_document(session)


def differs(file: Path, data: bytes) -> bool:
    """Whether the session kept for the thread is not ``data`` (encoded by
    :func:`encode`): whether :func:`write` has anything to do."""
    return _fs.read_bytes(file) != data


def write(file: Path, data: bytes, changes: _fs.Changes) -> None:
    """Keep a session encoded by :func:`encode` for the thread, durable as the call's
    ``changes`` say (as the manifest it belongs with); ``sessions/`` exists. The
    caller makes the name of ``sessions/`` itself durable."""
    _fs.atomic_write(file, data, changes=changes)


def remove(file: Path) -> bool:
    """Remove a thread's session file; whether there was one. Not fsynced here: a
    deletion fsyncs ``sessions/`` with its own (see ``Threads.delete_thread``)."""
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:  # cannot be removed: say so (verify --repair removes it later)
        log.warning("filelayer: cannot remove the session file %s: %s", file, exc)
        return False
    return True
