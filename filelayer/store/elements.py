"""Writing elements: where an element's bytes live, storing them (in one call, or in two
steps when the adapter writes the bytes off the event loop), and deleting an element
with its file. Deleted ids stay deleted: an element of a deleted step is refused."""

from __future__ import annotations

import logging
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

from .._io import commit as _commit
from .._io import fs as _fs
from ..errors import InvalidValueError
from ..format import codec as _codec
from ..format import journal
from ..format.ids import case_twin, check_id, is_valid_id, refuse_case_twin
from ..format.layout import ELEMENTS_DIR, Layout
from ..format.records import check_element_fields, check_object
from .appender import JournalAppender
from .authors import Authors
from .folds import FoldedJournals, TombstoneCache
from .locate import Locator, deletable
from .locking import WriteLocks
from .views import element_file_fields

log = logging.getLogger("filelayer")

_EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,10}$")


def element_relative_path(element_id: str, name: str | None, mime: str | None) -> str:
    """Where an element's bytes live, relative to its thread directory.

    The file is named by the element id (re-sending an element overwrites its file)
    plus an extension from its name or mime type, so a person can open it: a dot
    and 1 to 10 ASCII letters or digits, lowercased. So the name starts with a letter
    or a digit, like the id, and never takes a name the layer reserves for its own
    files (see :data:`filelayer.format.layout.RESERVED_PREFIX`).

    No two elements share a name: an id may hold dots, and ``e1`` named ``report.pdf``
    and ``e1.pdf`` named ``other`` would both be ``e1.pdf``. So an id with a dot always
    takes an extension (``.bin`` when it has none): a name then has at most one dot
    for an id without one, at least two for an id with one, and its id is what comes
    before its last dot (an extension holds none).
    """
    check_id("element", element_id)
    ext = ""
    match = _EXT_RE.search(name or "")
    if match:
        ext = match.group(0)
    elif mime:
        # The system's table may offer ".c++" or ".~" first: take a plain one.
        candidates = mimetypes.guess_all_extensions(mime.split(";")[0].strip())
        ext = next((e for e in candidates if _EXT_RE.fullmatch(e)), "")
    if not ext and "." in element_id:
        ext = ".bin"
    return f"{ELEMENTS_DIR}/{element_id}{ext.lower()}"


class Elements:
    """The writes of elements (see the module's docstring)."""

    def __init__(
        self,
        layout: Layout,
        folds: FoldedJournals,
        tombstones: TombstoneCache,
        authors: Authors,
        locator: Locator,
        locks: WriteLocks,
        appender: JournalAppender,
    ) -> None:
        self.layout = layout
        self.folds = folds
        self.tombstones = tombstones
        self.authors = authors
        self.locator = locator
        self.locks = locks
        self.appender = appender

    def _refused(self, thread_id: str, element: dict[str, Any], changes: _fs.Changes) -> bool:
        """Whether the element is deleted: its id was, or the step it is for (deleted
        ids stay deleted: a late ``send`` after ``remove`` stores nothing). An element
        sent for a deleted step is deleted with it, as the journal's readers fold it:
        its tombstone is journaled, so no later re-send without a step brings it back.
        Caller locks, and has made sure the thread exists."""
        dead = self.tombstones.of(thread_id)
        element_id = element.get("id")
        if element_id in dead.elements:
            # Refused, the send acknowledges the deletion: on the disk first (another
            # worker's group commit may not have fsynced it yet).
            self.appender.found_journal(thread_id, changes)
            return True
        if journal.for_deleted_step(element, dead.steps):
            log.debug("filelayer: element %s is for a deleted step: deleted", element_id)
            stored = self.folds.folded(thread_id).state.elements.get(str(element_id))
            record = journal.element_delete_record(str(element_id))
            self.appender.hide(thread_id, [record], _file_of(stored), changes)  # an earlier copy's
            return True
        return False

    def prepare_element(
        self,
        thread_id: str,
        element: dict[str, Any] | None = None,
        *,
        actor: str | None = None,
    ) -> Path | None:
        """See :meth:`ArchiveStore.prepare_element`."""
        check_id("thread", thread_id)
        if element is not None:
            element_id = check_id("element", check_object("element", element).get("id"))
            check_element_fields(element, element_id)
            # Its thread's elements are looked at (a new id's case): a long journal is
            # not folded on the event loop.
            self.folds.refuse_on_loop(thread_id)
        with self.locks.writing(thread_id), self.appender.changes() as changes:
            self.authors.authorize(thread_id, actor)
            if not self.appender.ensure_thread(thread_id, changes):
                return None
            if element is not None and self._refused(thread_id, element, changes):
                return None
            if element is not None:
                self._refuse_case_twin(thread_id, element["id"])
            directory = self.layout.elements_dir(thread_id)
            self.appender.make_dir(directory, changes)
            # Its name in the thread's directory, and that one's, on the disk before the
            # element's bytes are written in it (whoever made them).
            self.appender.names.elements(thread_id, changes)
            return directory

    def record_element(
        self,
        thread_id: str,
        element: dict[str, Any],
        *,
        actor: str | None = None,
        written: _fs.FileKey | None = None,
    ) -> bool:
        """See :meth:`ArchiveStore.record_element`."""
        check_id("thread", thread_id)
        element_id = check_id("element", check_object("element", element).get("id"))
        check_element_fields(element, element_id)
        record = journal.element_record(element)
        line = _codec.encode_new_line(record)  # refuse what cannot be stored before locking
        appender = self.appender
        # The element as stored decides which file a re-send replaces: its fold is
        # checked against the journal (an edit in place may name another file), which
        # for a long journal is not done on the loop (before any change).
        self.folds.refuse_on_loop(thread_id)
        with self.locks.writing(thread_id), appender.changes() as changes:
            self.authors.authorize(thread_id, actor)
            if not appender.ensure_thread(thread_id, changes) or self._refused(
                thread_id, element, changes
            ):
                if isinstance(element.get("file"), str):
                    appender.remove_element_file(thread_id, element["file"], changes)
                return False
            stored = self.folds.folded(thread_id).state.elements.get(element_id)
            self._refuse_case_twin(thread_id, element_id)
            relative = element.get("file")
            if written is not None and not self._still_written(thread_id, relative, written):
                # Another send of the element (another process) put its bytes there
                # since these were written: its record, not this one, describes them.
                log.debug("filelayer: element %s was sent again meanwhile", element_id)
                return False
            self._settle_resent(thread_id, stored, relative, changes)
            # A re-send that names another file (``e1.txt`` re-sent as ``e1.pdf``)
            # replaces the old one: its record on the disk first, then the old file goes.
            replaced = [f for f in _file_of(stored) if isinstance(relative, str) and f != relative]
            appender.append_lines(thread_id, line, changes, sync=bool(replaced))
            for old in replaced:
                appender.remove_element_file(thread_id, old, changes)
        self.locator.elements.put(element_id, thread_id)
        return True

    def _refuse_case_twin(self, thread_id: str, element_id: str) -> None:
        """:class:`InvalidIdError` if ``element_id`` is new to the thread and differs only
        in letter case from one of its elements: where case is ignored, their files are
        one (see :func:`~filelayer.format.ids.case_twin`). Caller locks."""
        elements = self.folds.folded(thread_id).state.elements
        if element_id not in elements:
            refuse_case_twin("element", element_id, case_twin(element_id, elements))

    def _still_written(self, thread_id: str, relative: object, written: _fs.FileKey) -> bool:
        """Whether the element file ``relative`` is still the one whose key the caller
        took when it wrote it (caller locks)."""
        path = self.layout.element_file(thread_id, relative) if isinstance(relative, str) else None
        try:
            return path is not None and _fs.file_key(os.stat(path)) == written
        except OSError:
            return False

    def _settle_resent(
        self,
        thread_id: str,
        stored: dict[str, Any] | None,
        relative: object,
        changes: _fs.Changes,
    ) -> None:
        """A re-sent element's new file and its name on the disk before its record, in
        the flush mode too (the fsync mode made them durable already). The new record
        replaces one whose bytes the background flush may have put on the disk, and may
        name another file (``e3.txt`` re-sent as ``e3.pdf``); were it to reach the disk
        before that file's name, which nothing orders in the flush mode, a power cut
        would leave the element with neither its old bytes nor its new ones. As a file
        that replaces another is fsynced before its rename: two fsyncs, on re-sends
        only. Caller locks; raises ``DiskWait`` on the event loop before any change."""
        if changes.durable or not isinstance(relative, str):
            return
        if not _file_of(stored):
            return  # a first send: nothing on the disk to lose
        path = self.layout.element_file(thread_id, relative)
        if path is None:
            return
        if _commit.on_loop():
            raise _commit.DiskWait(path)
        _fs.sync_now(path)

    def put_element(
        self,
        thread_id: str,
        element: dict[str, Any],
        data: bytes | None,
        *,
        actor: str | None = None,
    ) -> bool:
        """See :meth:`ArchiveStore.put_element`."""
        element = dict(check_object("element", element))
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            # Else a TypeError from the write of its temporary file, left behind.
            raise InvalidValueError(
                "data", f"an element's bytes must be bytes (or None), not {type(data).__name__}"
            )
        check_id("thread", thread_id)
        check_element_fields(element, check_id("element", element.get("id")))
        _codec.encode_new_line(journal.element_record(element))  # refused before any change
        # The thread's lock across the three steps: concurrent sends of one element
        # (other threads, other processes) land whole, one after the other, and the
        # record always describes the bytes on the disk.
        with self.locks.writing(thread_id):
            if data is not None:
                directory = self.prepare_element(thread_id, element, actor=actor)
                if directory is None:
                    return False
                relative = element_relative_path(
                    element["id"], element.get("name"), element.get("mime")
                )
                target = self.layout.element_file(thread_id, relative)
                assert target is not None
                with self.appender.changes() as changes:
                    _fs.atomic_write(target, data, changes=changes)
                element.update(element_file_fields(relative, data))
            return self.record_element(thread_id, element, actor=actor)

    def delete_element(
        self, element_id: str, thread_id: str | None = None, *, actor: str | None = None
    ) -> bool:
        """See :meth:`ArchiveStore.delete_element`."""
        if not deletable("element", element_id):
            return False
        thread_id = thread_id or self.locator.locate_element(element_id)
        if not thread_id or not is_valid_id(thread_id):
            return False
        with self.locks.state(thread_id) as state, self.appender.changes() as changes:
            if state is None:
                return False
            self.authors.authorize(thread_id, actor)
            el = state.elements.get(element_id)
            record = journal.element_delete_record(element_id)
            self.appender.hide(thread_id, [record], _file_of(el), changes)
        self.locator.elements.pop(element_id)
        return el is not None


def _file_of(element: dict[str, Any] | None) -> list[str]:
    """The element's stored file (relative to its thread directory), if it has one."""
    if element is not None and isinstance(element.get("file"), str):
        return [element["file"]]
    return []
