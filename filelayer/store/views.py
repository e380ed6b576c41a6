"""Chainlit-shaped views of what the store holds: a thread in the ``ThreadDict`` shape,
a page of the sidebar, an element and its bytes, the favorite steps; the defaults a step
dict gets, the element fields an element file implies, and copies that callers may
change freely. Reads only: they take no lock."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError
from ..format import journal, manifest
from ..format.ids import is_valid_id
from ..format.layout import Layout
from ..index.thread_index import Page, ThreadIndex
from . import heal as _heal
from . import session
from . import snapshots as _snapshots
from .authors import manifest_or_stand_in
from .cache import Lru
from .deleted import DeletedThreads
from .folds import FOLDED_CACHE, FoldedJournals
from .lifecycle import IndexLifecycle
from .locate import Locator

log = logging.getLogger("filelayer")

ElementUrl = Callable[[str, str], str]

STEP_DEFAULTS: dict[str, Any] = {
    "name": "",
    "type": "undefined",
    "threadId": None,
    "parentId": None,
    "input": "",
    "output": "",
    "metadata": {},
    "tags": None,
    "createdAt": None,
    "start": None,
    "end": None,
    "isError": False,
    "showInput": None,
    "language": None,
    "generation": None,
    "waitForAnswer": None,
    "defaultOpen": None,
    "autoCollapse": None,
}


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars), several times cheaper than
    ``copy.deepcopy``, and without recursion: stored metadata may nest deeply."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    if not value:  # most steps' metadata
        return {} if kind is dict else []
    top: Any = {} if kind is dict else []
    stack: list[tuple[Any, Any]] = [(value, top)]
    while stack:
        source, target = stack.pop()
        items = source.items() if type(source) is dict else enumerate(source)
        is_list = type(target) is list
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                child: Any = {} if kind is dict else []
                stack.append((item, child))
                item = child
            if is_list:
                target.append(item)
            else:
                target[key] = item
    return top


class _StepViews:
    """A thread's steps in Chainlit's shape, made once per version of its folded
    journal (or read from its view file): each step with its defaults, thread id and
    feedback filled in, and the fields that hold a dict or a list, the only ones a
    caller could change in place. A read then costs a shallow copy of each step and a
    copy of those fields. Also the thread's live elements, as stored."""

    __slots__ = ("_file", "_made", "folded", "key", "version")

    def __init__(
        self,
        made: tuple[list[tuple[dict[str, Any], tuple[str, ...]]], list[dict[str, Any]]] | None,
        *,
        folded: journal.FoldedJournal | None = None,
        file: _snapshots.View | None = None,
    ) -> None:
        self._made = made
        self._file = file.source if file is not None else None  # not its objects
        self.folded = folded
        """The fold these were made of, good while its version is :attr:`version`."""
        self.version = folded.version if folded is not None else 0
        self.key = file.key if file is not None else None
        """For views read from a view file: the journal they match, good while it does."""

    @property
    def steps(self) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
        return self._make()[0]

    @property
    def elements(self) -> list[dict[str, Any]]:
        return self._make()[1]

    def _make(
        self,
    ) -> tuple[list[tuple[dict[str, Any], tuple[str, ...]]], list[dict[str, Any]]]:
        """The views of a view file are made at their second read: the first one hands
        out the objects decoded from the file as they are, with nothing to copy."""
        if self._made is None:
            assert self._file is not None
            steps, elements = self._file.decode()
            self._made = ([(s, _containers(s)) for s in steps], elements)
            self._file = None
        return self._made

    @classmethod
    def of_fold(cls, thread_id: str, folded: journal.FoldedJournal) -> _StepViews:
        feedback = folded.state.feedback_by_step()
        steps: list[tuple[dict[str, Any], tuple[str, ...]]] = []
        for stored in folded.ordered:
            step = {**STEP_DEFAULTS, **stored}
            containers = _containers(stored)
            if "metadata" not in stored:
                step["metadata"] = {}
                containers += ("metadata",)
            step["threadId"] = thread_id
            step["streaming"] = False  # nothing persisted is still streaming
            fb = feedback.get(stored["id"])
            if fb:
                step["feedback"] = {
                    "id": fb["id"],
                    "forId": fb["forId"],
                    "value": fb.get("value"),
                    "comment": fb.get("comment"),
                }
                containers += ("feedback",)
            else:
                step["feedback"] = None
            steps.append((step, containers))
        return cls((steps, folded.state.live_elements()), folded=folded)

    def fresh(self) -> list[dict[str, Any]]:
        """The steps, as copies the caller may change (the app's ``on_chat_resume``
        may): the views stay cached."""
        steps = []
        for view, containers in self.steps:
            step = view.copy()
            for key in containers:
                step[key] = copy_json(step[key])
            steps.append(step)
        return steps


def _containers(step: dict[str, Any]) -> tuple[str, ...]:
    """The keys of ``step`` whose values are dicts or lists. Counted in C first: a
    step has a score of fields and usually one such, its metadata."""
    types = list(map(type, step.values()))
    dicts = types.count(dict)
    if not dicts and list not in types:
        return ()
    if dicts == 1 and list not in types and type(step.get("metadata")) is dict:
        return _METADATA
    return tuple(k for k, v in step.items() if type(v) is dict or type(v) is list)


_METADATA = ("metadata",)


def element_file_fields(relative: str, data: bytes) -> dict[str, Any]:
    return {"file": relative, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def element_view(
    thread_id: str, el: dict[str, Any], element_url: ElementUrl | None
) -> dict[str, Any]:
    """An element as Chainlit gets it: without the layer's file fields, with the URL
    of its bytes (the element route) when it has a stored file and no URL of its own."""
    view = {k: v for k, v in el.items() if k not in ("file", "sha256", "bytes")}
    view["threadId"] = thread_id
    if not view.get("url"):
        has_file = isinstance(el.get("file"), str)
        view["url"] = element_url(thread_id, el["id"]) if has_file and element_url else None
    view.setdefault("props", {} if el.get("type") == "custom" else None)
    return view


REBUILD_EVERY = 60.0
"""Seconds between two attempts of a running store to build an index that went missing."""

SWEEP_EVERY = 600.0
"""Seconds between two looks of a store writing views for the temporary files that view
writers killed midway left (see :meth:`ThreadSnapshots.sweep`)."""


class ThreadViews:
    """The store's reads, in the shapes Chainlit asks for."""

    def __init__(
        self,
        root: Path,
        layout: Layout,
        index: ThreadIndex,
        deleted: DeletedThreads,
        folds: FoldedJournals,
        locator: Locator,
        lifecycle: IndexLifecycle,
        healer: _heal.Healer,
    ) -> None:
        self.root = root
        self.layout = layout
        self.index = index
        self.deleted = deleted
        self.folds = folds
        self.locator = locator
        self.lifecycle = lifecycle
        self.healer = healer
        self._step_views: Lru[str, _StepViews] = Lru(FOLDED_CACHE)
        self.snapshots = _snapshots.ThreadSnapshots(layout)
        self._next_rebuild = 0.0  # when a missing index may be built again, at the soonest
        self._next_sweep = 0.0  # when views/ may be looked through for dead writers' files

    def _index_lost(self) -> bool:
        """Whether there is no index to read (``index/`` deleted under the running app,
        ``index/current`` naming a file that is gone) and it is time to build one: at
        most every :data:`REBUILD_EVERY` seconds, since a read-only archive can have
        none, and a page must not try each time."""
        if self.index.exists():
            return False
        now = time.monotonic()
        if now < self._next_rebuild:
            return False
        self._next_rebuild = now + REBUILD_EVERY
        return True

    def forget(self) -> None:
        """Drop the steps made for Chainlit (never served once their fold changed, but
        they hold on to it)."""
        self._step_views.clear()

    def read_manifest(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's manifest; ``None`` for no thread, or a deleted one (whatever a
        power cut left of its directory: the tombstone is what counts)."""
        if not is_valid_id(thread_id) or self.deleted.has(thread_id):
            return None
        if self.layout.thread_dir(thread_id).is_symlink():
            return None  # a link is no thread: never read through (filelayer verify)
        doc = manifest_or_stand_in(self.layout, thread_id)
        if doc is None and self.layout.journal(thread_id).exists():
            doc = manifest.new(thread_id, "")
        return doc

    def thread_author(self, thread_id: str) -> str:
        """The author's identifier, ``""`` for an unknown thread (Chainlit: 404)."""
        doc = self.read_manifest(thread_id)
        if doc is None:
            return ""
        return str(doc.get("userIdentifier") or "")

    def get_thread(
        self,
        thread_id: str,
        element_url: ElementUrl | None = None,
        *,
        viewer: str | None = None,
    ) -> dict[str, Any] | None:
        """The whole thread in Chainlit's ``ThreadDict`` shape, or ``None``.

        ``element_url(thread_id, element_id)`` gives the URL of a stored element's bytes
        (the element route); elements that came with their own URL keep it.

        ``viewer``: the identifier of the user the thread is read for, when it is known
        to be read for someone (``""``: an anonymous visitor); the author's saved session
        (see :mod:`~filelayer.store.session`) is merged into the metadata only for its
        author, or when the reader is the app itself (``None``). Chainlit's share page
        hands the metadata to every viewer of a shared thread, taking out only the chat
        profile, the settings and ``env``. An anonymous visitor is nobody's author, not
        even of a thread without one (an app without login, whose share page answers
        anyone): Chainlit resumes a thread for a logged-in user only.
        """
        doc = self.read_manifest(thread_id)
        if doc is None:
            return None
        private = viewer is None or (bool(viewer) and viewer == doc.get("userIdentifier"))
        views, first = self._views(thread_id)
        if first is not None:  # decoded from the view file just now: the caller's
            steps, stored_elements = first.steps, first.elements
        else:
            steps, stored_elements = views.fresh(), [copy_json(e) for e in views.elements]
        elements = []
        for el in stored_elements:
            elements.append(element_view(thread_id, el, element_url))
            self.locator.elements.put(el["id"], thread_id)
        return {
            "id": thread_id,
            "createdAt": doc.get("createdAt") or "",
            "updatedAt": doc.get("updatedAt") or "",
            "name": doc.get("name"),
            "userId": doc.get("userId"),
            "userIdentifier": doc.get("userIdentifier"),
            "tags": doc.get("tags"),
            "metadata": {
                **(doc.get("metadata") or {}),
                **(session.read(session.path(self.root, thread_id)) if private else {}),
            },
            "steps": steps,
            "elements": elements,
        }

    def _views(self, thread_id: str) -> tuple[_StepViews, _snapshots.View | None]:
        """The thread's steps and elements as they are now: from memory while its
        journal is unchanged; on a first read in this process, from its view file if
        that matches the journal (returned too: its objects are the caller's); else
        from its fold. A read never writes a view: it takes no lock and writes nothing,
        and the encoding would cost the event loop as much as the fold did. A long
        view or fold is not read on the event loop
        (:class:`~filelayer._io.commit.DiskWait`: the read is made again in a worker
        thread)."""
        views = self._step_views.get(thread_id)
        if views is not None and views.key is not None:
            if views.key == _snapshots.journal_key(self.layout, thread_id):
                return views, None
            views = None
        if thread_id not in self.folds:
            view = self.snapshots.load(thread_id)
            if view is not None:
                views = _StepViews(None, file=view)
                # The ids are taken before the objects are handed to the caller.
                self._keep(thread_id, views, [step["id"] for step in view.steps])
                return views, view
        folded = self.folds.folded(thread_id)
        if views is None or views.folded is not folded or views.version != folded.version:
            views = _StepViews.of_fold(thread_id, folded)
            self._keep(thread_id, views, [step["id"] for step, _ in views.steps])
        return views, None

    def _keep(self, thread_id: str, views: _StepViews, step_ids: list[str]) -> None:
        """Keep the views, and tell the locator which steps the thread holds."""
        self._step_views.put(thread_id, views)
        self.locator.saw_steps(thread_id, step_ids)

    def save_views(self, thread_ids: list[str], *, live: bool = False) -> list[str]:
        """Write the view files of ``thread_ids`` that are long and have none that
        matches their journal (a store closing, or a running one, for the threads it
        wrote). Each journal is read whole, from one ``stat`` taken before: its key.
        Best effort: a thread that cannot be read gets no view.

        ``live``: called from a thread of its own while the store serves calls (the
        caller checked, under the store's mutex, that no thread of ``thread_ids`` is
        deleted): nothing of the store's caches is touched. A deletion that comes
        meanwhile removes the view, or finds it never placed:
        :meth:`ThreadSnapshots.save` puts it in place under the thread's lock only if
        the journal is still the one it was made from. Returns the threads left for the
        store's close: longer than :data:`~filelayer.store.snapshots.LIVE_MAX_BYTES`,
        or past the budget, they must not lose their view for having gone quiet."""
        now = time.monotonic()
        if now >= self._next_sweep:
            # What writers killed midway left: copies of conversations, and the files
            # of threads deleted since, which nothing else removes until a reindex.
            self._next_sweep = now + SWEEP_EVERY
            self.snapshots.sweep()
        budget = _snapshots.CLOSE_BUDGET_BYTES
        later: list[str] = []
        for n, thread_id in enumerate(thread_ids):
            if budget <= 0:
                if live:
                    later += thread_ids[n:]
                break
            try:
                read = self._save_view(thread_id, live)
            except (OSError, ValueError) as exc:
                log.debug("filelayer: no view of thread %s (%s)", thread_id, exc)
                continue
            if read is None:
                later.append(thread_id)
            else:
                budget -= read
        return later

    def _save_view(self, thread_id: str, live: bool = False) -> int | None:
        """Write the thread's view if it needs one; the journal bytes it read (``None``:
        too long to be written while the store serves an app, left for its close)."""
        key = _snapshots.journal_key(self.layout, thread_id)
        if key is None or key[2] < _snapshots.VIEW_MIN_BYTES:
            return 0
        if live and key[2] > _snapshots.LIVE_MAX_BYTES:
            return None
        if not live and self.deleted.has(thread_id):
            return 0
        if self.snapshots.matches(thread_id, key):
            return 0
        folded = journal.FoldedJournal()
        folded.catch_up(self.layout.journal(thread_id))
        st = folded.read_whole
        if st is None:
            return folded.offset  # not read whole in one look (a line being appended)
        read = _snapshots.key_of(st)
        views = _StepViews.of_fold(thread_id, folded)
        self.snapshots.save(
            thread_id, read, folded.last, [step for step, _ in views.steps], views.elements
        )
        return folded.offset

    def list_threads(
        self,
        *,
        user_id: str | None,
        first: int = 20,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> tuple[list[dict[str, Any]], Page]:
        """A page of threads (without steps), newest activity first, from the index.

        Each thread's ``createdAt`` is its *activity* (the later of its creation and its
        last message), not its creation time: Chainlit's UI re-sorts the threads it
        receives by ``createdAt`` and groups them by that date ("Today", "Yesterday"…),
        so an old thread continued today must say today, and the order the UI makes
        must be the order of the pages (their cursors follow the same key), or threads
        of a later page would land above those already shown. Chainlit's PostgreSQL
        layer does the same. ``updatedAt`` is the last change of any kind (a rename
        too); ``get_thread`` and the manifest keep the true creation time.
        """
        for name, value in (("cursor", cursor), ("search", search), ("user id", user_id)):
            if value is not None and not isinstance(value, str):
                raise InvalidValueError(
                    name, f"a {name} must be a string, not {type(value).__name__}"
                )
        if not isinstance(first, int):  # Chainlit's own model gives an int
            raise InvalidValueError(
                "first", f"a page size must be a whole number, not {type(first).__name__}"
            )
        self.healer.look()  # git moved the files under this process: reconcile
        page = self.index.page(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )
        if self.index.damaged or (not page.items and self._index_lost()):
            # Damaged (found so just now) or gone: it is derived, build it again.
            self.lifecycle.ensure_index()
            page = self.index.page(
                user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
            )
        threads = []
        for summary in page.items:
            doc = manifest_or_stand_in(self.layout, summary.id) or {}
            threads.append(
                {
                    "id": summary.id,
                    "createdAt": summary.activity,  # what the UI sorts and groups by
                    "updatedAt": summary.changed,
                    "name": summary.name,
                    "userId": summary.user_id,
                    "userIdentifier": summary.user_identifier,
                    "tags": summary.tags,
                    "metadata": doc.get("metadata") or {},
                    "steps": [],
                    "elements": [],
                }
            )
        self.healer.page_served.set()
        return threads, page

    def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        """The steps ``user_id`` marked as favorite, newest first."""
        if not isinstance(user_id, str):
            return []
        self.index.refresh()
        result = []
        for thread_id, step_ids in self.index.favorites_of(user_id):
            thread = self.get_thread(thread_id)
            if thread is None:
                continue
            for step in thread["steps"]:
                metadata = step.get("metadata")
                if (
                    step["id"] in step_ids
                    and isinstance(metadata, dict)
                    and metadata.get("favorite")
                ):
                    result.append(step)
        result.sort(key=lambda s: s.get("createdAt") or "", reverse=True)
        return result

    def get_element(
        self, thread_id: str, element_id: str, element_url: ElementUrl | None = None
    ) -> dict[str, Any] | None:
        if not (is_valid_id(thread_id) and is_valid_id(element_id)):
            return None
        if not self.layout.journal(thread_id).exists() or self.deleted.has(thread_id):
            return None
        el = self._live_element(thread_id, element_id)
        return element_view(thread_id, el, element_url) if el else None

    def element_file(self, thread_id: str, element_id: str) -> tuple[dict[str, Any], Path] | None:
        """The element's stored record and the path of its bytes, if it has any."""
        if not (is_valid_id(thread_id) and is_valid_id(element_id)) or self.deleted.has(thread_id):
            return None
        el = self._live_element(thread_id, element_id)
        if el is None or not isinstance(el.get("file"), str):
            return None
        path = self.layout.element_file(thread_id, el["file"])
        if path is None or not path.is_file():
            return None
        # A link (a merge can bring one: git keeps symbolic links) could make an export
        # or a copy read any file the process can: the archive's files are its own.
        if any(p.is_symlink() for p in (path, path.parent, path.parent.parent)):
            log.warning("filelayer: %s is a symbolic link: not read", path)
            return None
        return el, path

    def _live_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        """The element as its thread's folded journal holds it now (a copy): the fold
        kept in memory, caught up with what was appended, not the journal read again
        (an export asks for each of a thread's elements in turn)."""
        state = self.folds.folded(thread_id).state
        el = {e["id"]: e for e in state.live_elements()}.get(element_id)
        return copy_json(el) if el is not None else None
