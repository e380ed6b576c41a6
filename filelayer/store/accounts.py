"""The user registry: one file per user under ``users/``, and the ids this process saw."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._io import fs as _fs
from .._io import locks as _locks
from .._time import now_iso
from ..errors import CorruptFileError, InvalidValueError, StorageWriteError
from ..format import codec as _codec
from ..format import users
from ..format.layout import Layout
from .cache import Lru

IDS_KEPT = 4096
"""User files whose id a process remembers, each with the state of the file it read."""

_FileKey = tuple[int, int, int, int]
"""A file's inode, size, modification and change times: what changes when it does."""

log = logging.getLogger("filelayer")

SETTLED_NS = 2_000_000_000
"""How long ago the users directory must have changed for a reading of all its files to
be trusted until it changes again: a file system whose times have a resolution of a
second or two (FAT, some network mounts) could add a file within the same tick."""


class Accounts:
    """Users by identifier (their file's name is derived from it) and by id (a
    process-wide map filled as users are read: ids never change)."""

    def __init__(self, layout: Layout, lock_timeout: float) -> None:
        self.layout = layout
        self.lock_timeout = lock_timeout
        self._users_by_id: dict[str, dict[str, Any]] = {}
        self._ids: Lru[str, tuple[_FileKey, str]] = Lru(IDS_KEPT)
        """Identifier -> the id its user file held, with the file's key then."""
        self._durable: Lru[str, _FileKey] = Lru(IDS_KEPT)
        """Identifier -> the user file this process wrote or found and made durable
        (its key then), name included: found again unchanged, it needs no fsync."""
        self._read_in_full: tuple[int, int, int] | None = None
        """The users directory's state (:meth:`_directory_state`) when every user file
        in it was read, if it had not changed for :data:`SETTLED_NS` by then."""

    def get(self, identifier: str) -> dict[str, Any] | None:
        if not isinstance(identifier, str) or not identifier:
            return None
        try:
            path = self.layout.user_file(identifier)
            key = _file_key(path)  # before the read: a change after it is seen next time
            doc = users.read(path)
        except (CorruptFileError, ValueError) as exc:
            log.warning("filelayer: %s", exc)
            return None
        if doc is None or doc["identifier"] != identifier:
            return None
        self._users_by_id[doc["id"]] = doc
        if key is not None:
            self._ids.put(identifier, (key, str(doc["id"])))
        return doc

    def id_of(self, identifier: str) -> str | None:
        """The id the user file of ``identifier`` holds (``None``: no usable file). Read
        once per version of the file: a ``stat`` tells a new one (a merge, another
        process), so a known user costs no read."""
        try:
            path = self.layout.user_file(identifier)
        except ValueError:
            return None
        key = _file_key(path)
        if key is None:
            return None
        found = self._ids.get(identifier)
        if found is not None and found[0] == key:
            return found[1]
        user = self.get(identifier)
        return None if user is None else str(user["id"])

    def upsert(
        self,
        identifier: str,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """Create the user, or update its metadata; the id never changes."""
        if not isinstance(identifier, str) or not identifier:
            raise InvalidValueError("identifier", "a user identifier must be a non-empty string")
        if display_name is not None and not isinstance(display_name, str):
            # Chainlit's ``PersistedUser`` takes a string or nothing: stored, it would
            # fail every later lookup of this login.
            raise InvalidValueError(
                "display_name",
                "a user display name must be a string (or None), not "
                + type(display_name).__name__,
            )
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise InvalidValueError("metadata", "user metadata must be a dict")
            _codec.check_depth(metadata)
            # As stored ("1" for a key 1, lists for tuples) and the caller's no more: what
            # this process keeps and compares with the file is what every reader reads.
            metadata = _codec.stored_form(metadata)
        path = self.layout.user_file(identifier)
        with _locks.locked(self.layout.users_lock, self.lock_timeout):
            existing = users.read(path)
            if existing is not None and existing["identifier"] != identifier:
                raise CorruptFileError(path, "it holds another identifier (hash collision?)")
            if existing is None:
                doc: dict[str, Any] = {
                    "id": users.user_id(identifier),
                    "identifier": identifier,
                    "displayName": display_name,
                    "metadata": dict(metadata or {}),
                    "createdAt": now_iso(),
                }
            else:
                doc = dict(existing)
                if metadata is not None:
                    doc["metadata"] = dict(metadata)
                if display_name is not None:
                    doc["displayName"] = display_name
            if doc != existing:
                users.write(path, doc, durable=True)
            elif self._durable.get(identifier) != _file_key(path):
                # Nothing to change, but the record found is what the call acknowledges:
                # the call that wrote it may have been killed before its name was on
                # the disk (or a git checkout wrote it without an fsync).
                _sync_found(path)
            key = _file_key(path)  # under the lock: the file this call left
            if key is not None:
                self._durable.put(identifier, key)
        self._users_by_id[doc["id"]] = doc
        if key is not None:
            self._ids.put(identifier, (key, str(doc["id"])))
        return doc

    def by_id(self, user_id: str) -> dict[str, Any] | None:
        """The user whose id is ``user_id``, ``None`` if the archive has none.

        A user this process made or read is found in memory (Chainlit looks its user
        up at every login), while its file is still there (one ``stat``: another process
        may have erased the user). Any other id costs a reading of every user file (a user
        file is named after the identifier, which an id does not give back), but only
        once while the users directory stays as it was then: a new user file changes
        the directory, and a change too recent to tell from the time of the reading
        (file systems whose times are coarse) is not trusted.
        """
        if not isinstance(user_id, str):
            return None
        found = self._users_by_id.get(user_id)
        if found is not None:
            if self.layout.user_file(found["identifier"]).exists():
                return found
            # Erased (or removed) by another process since it was read: no user now.
            del self._users_by_id[user_id]
        state = self._directory_state()
        if state is not None and state == self._read_in_full:
            return None  # no user file came or went since every one was read
        for doc in self.all():
            self._users_by_id[doc["id"]] = doc
        settled = state is not None and time.time_ns() - state[2] >= SETTLED_NS
        self._read_in_full = state if settled else None
        return self._users_by_id.get(user_id)

    def _directory_state(self) -> tuple[int, int, int] | None:
        """What changes when a user file is added, replaced or removed: the users
        directory's identity and modification time (``None``: no directory yet)."""
        try:
            st = os.stat(self.layout.users)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns

    def all(self) -> Iterator[dict[str, Any]]:
        if not self.layout.users.is_dir():
            return
        for path in sorted(self.layout.users.glob("*.json")):
            try:
                doc = users.read(path)
            except CorruptFileError as exc:
                log.warning("filelayer: %s", exc)
                continue
            if doc is not None:
                yield doc


def _sync_found(path: Path) -> None:
    """Put the file ``path`` and its name on the disk (a user file found as the call
    would have written it)."""
    try:
        fd = os.open(path, os.O_RDONLY | _fs.NOFOLLOW)
        try:
            _fs.fsync_fd(fd)
        finally:
            os.close(fd)
        _fs.fsync_dir(path.parent)
    except OSError as exc:
        raise StorageWriteError(path, exc) from exc


def _file_key(path: os.PathLike[str] | str) -> _FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
