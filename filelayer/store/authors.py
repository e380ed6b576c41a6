"""Who may write a thread: its author, as its manifest and the user registry say, and
the user id the index files it under."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import CorruptFileError, NotAuthorError
from ..format import manifest
from ..format.layout import Layout
from .accounts import Accounts
from .cache import Lru

log = logging.getLogger("filelayer")

OWNER_CACHE_SIZE = 50_000
"""Step, element and thread ids a process remembers (where they are, that they exist)."""


def manifest_or_stand_in(layout: Layout, thread_id: str) -> dict[str, Any] | None:
    """The manifest, or a stand-in built from the directory when it is damaged."""
    path = layout.manifest(thread_id)
    try:
        return manifest.read(path)
    except CorruptFileError as exc:
        log.warning("filelayer: %s", exc)
        return manifest.new(thread_id, "")


def manifest_lost(layout: Layout, thread_id: str) -> bool:
    """Whether the thread's manifest cannot be read (damaged, emptied by a power cut,
    missing beside a journal): its name and author are not known from its files."""
    path = layout.manifest(thread_id)
    try:
        doc = manifest.read(path)
    except (CorruptFileError, OSError):
        return True
    return doc is None and layout.journal(thread_id).exists()


class Authors:
    """Thread authors and owners, remembered per manifest version and per identifier."""

    __slots__ = ("_authors", "_owner_ids", "accounts", "layout")

    def __init__(self, layout: Layout, accounts: Accounts) -> None:
        self.layout = layout
        self.accounts = accounts
        self._authors: Lru[str, tuple[tuple[int, int, int], str | None]] = Lru(OWNER_CACHE_SIZE)
        self._owner_ids: Lru[str, str] = Lru(OWNER_CACHE_SIZE)  # identifier -> user id

    def forget(self) -> None:
        self._authors.clear()
        self._owner_ids.clear()

    def author_of(self, thread_id: str) -> str | None:
        """The identifier of the thread's author; ``None`` for a thread without one
        (an app without login, a Slack or Teams thread, a thread not created yet).

        A thread whose author nobody can prove to be has the author ``""``, which
        matches no caller: its manifest names a user id that the archive does not know,
        or the unknown author (:data:`manifest.UNKNOWN_AUTHOR`: ``verify --repair``
        found neither the manifest nor the index holding the author), or it cannot be
        read (damaged, emptied by a power cut, missing beside a journal). Refusing is
        the safe side: the app itself (``actor=None``) still writes, and ``filelayer
        verify --repair`` makes a new manifest.
        """
        path = self.layout.manifest(thread_id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            # No thread yet (anyone may make it), unless its journal is there.
            return "" if self.layout.journal(thread_id).exists() else None
        except OSError:
            return ""
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._authors.get(thread_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            doc = manifest.read(path)
        except (CorruptFileError, OSError):
            doc = None
        if doc is None:  # damaged, or gone since the stat (deleted): not cached
            gone = not path.exists() and not self.layout.journal(thread_id).exists()
            return None if gone else ""
        author: str | None = doc.get("userIdentifier") or None
        if doc.get("userId") == manifest.UNKNOWN_AUTHOR:
            author = ""
        elif author is None and isinstance(doc.get("userId"), str) and doc["userId"]:
            user = self.accounts.by_id(doc["userId"])
            if user is None:
                # Not kept with the manifest's version: another process may register the
                # user (a copy, a login on another worker) without touching the manifest,
                # and the user would be refused their own thread until a restart.
                # ``by_id`` answers again at the cost of a ``stat`` of users/.
                return ""
            author = str(user["identifier"])
        self._authors.put(thread_id, (signature, author))
        return author

    def authorize(self, thread_id: str, actor: str | None) -> None:
        """Refuse a write by ``actor`` to a thread another user wrote.

        ``actor`` is the identifier of the logged-in user on whose behalf the call is
        made, ``None`` for the app itself (its own code, a script, the command line),
        which may write anywhere. A thread without an author (no login, Slack and Teams
        threads) may be written by anyone, as before. Callers hold the thread's lock, so
        the author cannot change between this check and the write.
        """
        if actor is None:
            return
        author = self.author_of(thread_id)
        if author is not None and author != actor:
            log.warning(
                "filelayer: refused a write by %r to thread %s of another user", actor, thread_id
            )
            raise NotAuthorError(thread_id, actor)

    def owner_id(self, doc: dict[str, Any]) -> str | None:
        """The user id the index files a thread under: its manifest's ``userId``,
        unless the archive's user file for its ``userIdentifier`` holds another id.
        That happens when one person first logged in on two clones before user ids were
        derived from identifiers (:func:`users.user_id`), or on a clone of such a
        release and a clone of this one, and a merge kept one of the two ids: the
        person's sidebar then holds the threads of both clones."""
        uid = doc.get("userId")
        ident = doc.get("userIdentifier")
        if uid == manifest.UNKNOWN_AUTHOR:
            return None  # in no one's sidebar: the author is not known
        if not isinstance(uid, str) or not isinstance(ident, str) or not ident:
            return uid if isinstance(uid, str) else None
        # Even a derived id: the user file a merge kept may hold the random id an older
        # release made on another clone, and the person logs in with that one. One read
        # per identifier, kept while users/ stays as it was.
        known = self._owner_ids.get(ident)
        if known is None:
            known = self.accounts.id_of(ident) or uid
            self._owner_ids.put(ident, known)
        return known
