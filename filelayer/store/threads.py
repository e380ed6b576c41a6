"""Writing threads: creating and changing a manifest (Chainlit's ``update_thread``, a
copy's ``put_manifest``) and deleting a thread whole."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import commit as _commit
from .._io import fs as _fs
from .._io import locks as _locks
from .._time import latest, now_iso
from ..errors import ArchiveError, InvalidValueError, StorageWriteError, UnknownUserError
from ..format import codec as _codec
from ..format import manifest
from ..format.ids import check_id
from ..format.layout import Layout, deleting_path
from ..index.records import delete_record
from ..index.thread_index import ThreadIndex
from . import session
from .accounts import Accounts
from .appender import JournalAppender
from .authors import Authors, manifest_or_stand_in
from .deleted import DeletedThreads
from .indexing import IndexBook
from .locate import deletable
from .locking import WriteLocks
from .snapshots import ThreadSnapshots
from .views import copy_json

log = logging.getLogger("filelayer")


class Threads:
    """The writes of whole threads (see the module's docstring)."""

    def __init__(
        self,
        root: Path,
        layout: Layout,
        index: ThreadIndex,
        accounts: Accounts,
        authors: Authors,
        deleted: DeletedThreads,
        book: IndexBook,
        locks: WriteLocks,
        appender: JournalAppender,
    ) -> None:
        self.root = root
        self.layout = layout
        self.index = index
        self.accounts = accounts
        self.authors = authors
        self.deleted = deleted
        self.book = book
        self.locks = locks
        self.appender = appender

    def update_thread(
        self,
        thread_id: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        actor: str | None = None,
    ) -> bool:
        """See :meth:`ArchiveStore.update_thread`."""
        check_id("thread", thread_id)
        if name is not None and not isinstance(name, str):
            raise InvalidValueError("name", "a thread name must be a string")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidValueError("metadata", "thread metadata must be a dict")
        if metadata:
            _codec.check_depth(metadata)
            metadata = _codec.stored_form(metadata)  # merged and compared as stored
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
        ):
            raise InvalidValueError("tags", "thread tags must be a list of strings")
        local: bytes | None = None
        if metadata is not None and session.is_session(metadata):
            # Chainlit's persisted user session: its volatile part is kept out of the
            # committed manifest (see filelayer.store.session), encoded before anything
            # is written.
            metadata, kept = session.split(metadata)
            local = session.encode(kept)
        identifier: str | None = None
        if user_id is not None and (not isinstance(user_id, str) or not user_id):
            # "" would leave the thread without an author: everyone's to write.
            raise InvalidValueError("user_id", "a user id must be a non-empty string")
        path = self.layout.manifest(thread_id)
        with self.locks.writing(thread_id), self.appender.changes() as changes:
            if user_id is not None:
                # Under the thread's lock: an erasure of the user that ran since the
                # call began leaves no record, and must find no new thread naming them
                # once it has waited for the writes holding these locks.
                user = self.accounts.by_id(user_id)
                if user is None:
                    # An author nobody can log in as: the thread's real author locked out.
                    raise UnknownUserError(user_id)
                identifier = user["identifier"]
            self.authors.authorize(thread_id, actor)
            self.appender.refuse_link(thread_id)
            if self.deleted.has(thread_id):  # its directory may outlive a crash
                log.debug("filelayer: not resurrecting deleted thread %s", thread_id)
                return False
            doc = manifest.read(path)
            self.appender.refuse_case_twin(thread_id, doc)
            created = doc is None
            if doc is None:
                doc = manifest.new(thread_id, now_iso())
            before = copy_json(doc)
            if name is None and metadata and isinstance(metadata.get("name"), str):
                name = metadata["name"]
            if name is not None:
                doc["name"] = name
            if user_id is not None:
                doc["userId"], doc["userIdentifier"] = user_id, identifier
            if tags is not None:
                doc["tags"] = list(tags)
            if metadata is not None:
                doc["metadata"] = manifest.merge_metadata(doc.get("metadata") or {}, metadata)
            changed = created or doc != before
            if changed and not created:
                # Never back, if the clock went back; as instants: a manifest may hold
                # any value, or a time with an offset.
                last = before.get("updatedAt")
                doc["updatedAt"] = latest(now_iso(), last) if isinstance(last, str) else now_iso()
            data = manifest.encode(doc)  # refuse what cannot be stored before making anything
            session_file = None
            session_found = False
            if local is not None:
                session_file = session.path(self.root, thread_id)
                if not session.differs(session_file, local):
                    session_file, session_found = None, True
                elif _commit.on_loop() and _fs.holds_durable_content(session_file):
                    # Replaced by a file fsynced before the rename: not on the loop.
                    raise _commit.DiskWait(session_file)
            if changed:
                if created:
                    self.appender.make_dir(path.parent, changes)
                elif _commit.on_loop() and _fs.holds_durable_content(path):
                    # Its replacement is fsynced before the rename: not on the loop.
                    raise _commit.DiskWait(path)
                group = changes.group
                if group is not None and not created:
                    # A group commit: the new manifest is fsynced with the group's other
                    # files and renamed before the call is acknowledged; the thread's
                    # lock is held until then.
                    held = _locks.hold(self.layout.thread_lock(thread_id), self.locks.lock_timeout)
                    try:
                        fd, tmp = _fs.write_temp(path, data)
                    except BaseException:
                        held.release()
                        raise
                    group.replace_later(fd, tmp, path, held.release, thread_id)
                    changes.entry(path.parent)
                else:
                    manifest.write_encoded(path, data, changes=changes)
                    self.appender.names.manifest(thread_id, path, changes)
                # The thread directory's name on the disk too, whoever made it.
                self.appender.names.thread(thread_id, changes)
                self.index.append([self.book.thread_record(doc)])
            else:
                # Nothing to change, but the manifest found is what the call
                # acknowledges: made durable as if the call had written it (another
                # worker's group commit, or a killed call, may have made it unsynced),
                # unless this store did so with this very file.
                if not self.appender.names.manifest_known(thread_id, path):
                    _fs.found(path, changes)
                    self.appender.names.manifest(thread_id, path, changes)
                self.appender.names.thread(thread_id, changes)
                if not self.book.agrees(doc):
                    # A retry of a call whose manifest landed but whose index record
                    # was lost (a crash between the two): put the record back.
                    self.index.append([self.book.thread_record(doc)])
            if session_found:
                # The same: the session kept is the one this call saves.
                found = session.path(self.root, thread_id)
                _fs.found(found, changes)
                self.appender.names.directory(found.parent, changes)
            if session_file is not None and local is not None:
                self.appender.make_dir(session_file.parent, changes)
                session.write(session_file, local, changes)
                self.appender.names.directory(session_file.parent, changes)
        return True

    def put_manifest(self, doc: dict[str, Any]) -> None:
        """See :meth:`ArchiveStore.put_manifest`."""
        thread_id = check_id("thread", doc.get("id"))
        doc = {**doc, "metadata": doc.get("metadata") or {}}
        _codec.check_depth(doc["metadata"])  # new data here, held as update_thread's
        user = self.accounts.by_id(doc["userId"]) if isinstance(doc.get("userId"), str) else None
        if user is not None:
            doc["userIdentifier"] = user["identifier"]
        manifest.encode(doc)
        path = self.layout.manifest(thread_id)
        with self.locks.writing(thread_id), _fs.Changes(durable=True) as changes:
            if self.deleted.has(thread_id):
                raise ArchiveError(f"thread {thread_id} was deleted in {self.root}")
            self.appender.refuse_link(thread_id)  # written through, it lands outside
            self.appender.refuse_case_twin(thread_id, manifest_or_stand_in(self.layout, thread_id))
            self.appender.make_dir(path.parent, changes)
            manifest.write(path, doc, changes=changes)
            self.appender.names.thread(thread_id, changes)
            self.index.append([self.book.thread_record(doc)])

    def delete_thread(
        self,
        thread_id: str,
        *,
        actor: str | None = None,
        only_if: Callable[[], bool] | None = None,
        at: str | None = None,
    ) -> bool:
        """See :meth:`ArchiveStore.delete_thread`."""
        if not deletable("thread", thread_id):
            return False
        directory = self.layout.thread_dir(thread_id)
        with self.locks.writing(thread_id, deleted=True):
            self.authors.authorize(thread_id, actor)
            if only_if is not None and not only_if():
                return False
            existed = directory.exists()
            when = at or now_iso()
            _fs.append(
                self.layout.deleted_file,
                _codec.encode_line({"deletedAt": when, "id": thread_id}),
                durable=True,
            )
            self.deleted.add(thread_id, when)
            self.appender.forget_thread(thread_id)
            removed: list[Path] = []  # the directories whose names changed
            if existed:
                # Rename first: readers see the whole thread or none of it.
                doomed = deleting_path(directory)
                try:
                    os.replace(directory, doomed)
                except OSError as exc:
                    raise StorageWriteError(directory, exc) from exc
                # Again if need be: a compaction (of another process) that had found
                # the directory before the rename may create its temporary file in it.
                _fs.remove_tree(doomed)
                removed.append(self.layout.threads)
            views = ThreadSnapshots(self.layout)
            if views.remove(thread_id):  # no copy of it may stay
                removed.append(views.directory)
            self.index.append([delete_record(thread_id)])
            file = session.path(self.root, thread_id)
            if session.remove(file):
                removed.append(file.parent)
            # Every removal reaches the disk before the call returns: readers also
            # consult the tombstone, but a thread must not come back, nor a copy of its
            # conversation (its view, its session) outlive a deletion or an erasure.
            _fs.fsync_dirs(removed)
        return existed
