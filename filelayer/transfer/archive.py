"""The archive side of a copy: reads and writes a filelayer archive, keeping ids and times."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .._io import locks as _locks
from .._time import ms_key
from ..errors import ArchiveError, FileLayerError
from ..format import codec as _codec
from ..format import journal, manifest, users
from ..format.ids import id_problem, is_valid_id
from ..format.records import check_element_fields, check_step_fields
from ..maintenance.announce import maintaining
from ..maintenance.retention import is_erased
from ..store.archive import ArchiveStore
from ..store.views import STEP_DEFAULTS
from .model import (
    _ARCHIVE_ONLY_ELEMENT_KEYS,
    CopyUsageError,
    ElementData,
    Endpoint,
    Fetch,
    Summary,
    ThreadData,
    ThreadPlan,
    ThreadRef,
    normalise_times,
)


class ArchiveEndpoint(Endpoint):
    """A filelayer archive, through :class:`ArchiveStore` and the format's own modules.

    Writing keeps ids and times, so the manifest and user files are written directly
    (the store's ``update_thread``/``upsert_user`` stamp new times and new ids, which is
    right for an app and wrong for a copy), under the same locks the store takes.
    """

    def __init__(self, root: str, *, fetch_urls: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.label = str(self.root)
        self.store: ArchiveStore | None = None
        self.fetch_urls = fetch_urls
        self._held = contextlib.ExitStack()

    async def open(self, *, create: bool, dry_run: bool, create_schema: bool) -> None:
        if not create and not self.root.exists():
            raise CopyUsageError(f"no archive at {self.root}: check the SOURCE path")
        if create and dry_run and not self.root.exists():
            return  # a dry run into a new archive: everything would be copied
        try:
            self.store = ArchiveStore(self.root, create=create and not dry_run, upgrade=not dry_run)
        except ArchiveError as exc:
            raise CopyUsageError(str(exc)) from exc
        if create and not dry_run:
            # Every thread of the source is about to be written here: the apps serving
            # this archive keep their writes off their event loop until the copy ends.
            self._held.enter_context(maintaining(self.store.layout))

    async def close(self) -> None:
        self._held.close()

    def _need(self) -> ArchiveStore:
        assert self.store is not None
        return self.store

    # reading

    async def list_users(self, identifier: str | None) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        if identifier is not None:
            user = self.store.get_user(identifier)
            return [user] if user else []
        return list(self.store.iter_users())

    async def list_threads(self, identifier: str | None, since: str | None) -> list[ThreadRef]:
        if self.store is None:
            return []
        store = self.store
        user_id = None
        if identifier is not None:
            user = store.get_user(identifier)
            if user is None:
                return []
            user_id = user["id"]
        store.index.refresh()
        tombstones = self._need().deleted_threads()
        refs = []
        for thread_id in store.thread_ids():
            if thread_id in tombstones:
                continue
            doc = store.read_manifest(thread_id) or {}
            if user_id is not None and doc.get("userId") != user_id:
                continue
            if since is not None:
                summary = store.index.threads.get(thread_id)
                # Any change counts here (a rename too), not only the sidebar's activity.
                changed = summary.changed if summary else str(doc.get("updatedAt") or "")
                newest = max(ms_key(changed), ms_key(doc.get("createdAt")))
                if newest < since:
                    continue
            refs.append(ThreadRef(thread_id))
        for thread_id, deleted_at in sorted(tombstones.items()):
            if since is None or ms_key(deleted_at) >= since:
                refs.append(ThreadRef(thread_id, deleted_at=deleted_at or "deleted"))
        return refs

    async def is_deleted(self, thread_id: str) -> bool:
        return self.store is not None and self.store.is_deleted(thread_id)

    async def read_thread(self, thread_id: str) -> ThreadData | None:
        store = self.store
        if store is None or store.is_deleted(thread_id) or not is_valid_id(thread_id):
            return None
        if store.layout.thread_dir(thread_id).is_symlink():
            return None  # no thread of this archive: read through, it is anyone's files
        path = store.layout.manifest(thread_id)
        doc = manifest.read(path) if path.exists() else None
        if doc is None:
            return None
        parsed = journal.read(store.layout.journal(thread_id))
        state = journal.fold(parsed.records)
        data = ThreadData(
            thread={k: doc.get(k) for k in manifest.FIELDS},
            steps=[dict(s) for s in state.ordered_steps()],
            feedback=[dict(f) for f in state.feedback_by_step().values()],
            deleted_steps=set(state.deleted_steps),
            deleted_elements=set(state.deleted_elements),
            deleted_feedback={
                r["id"] for r in parsed.records if r["op"] == journal.OP_FEEDBACK_DELETE
            },
        )
        data.unreadable = [
            f"line {n} of threads/{thread_id}/steps.jsonl is damaged and was left out "
            "(`filelayer verify --repair` sets it aside)"
            for n in parsed.bad_lines
        ]
        live_feedback = {f["id"] for f in data.feedback}
        data.deleted_feedback -= live_feedback
        for el in state.live_elements():
            fields = {k: v for k, v in el.items() if k not in _ARCHIVE_ONLY_ELEMENT_KEYS}
            item = ElementData(fields=fields)
            if isinstance(el.get("file"), str):
                item.sha256 = el.get("sha256") if isinstance(el.get("sha256"), str) else None
                item.size = el.get("bytes") if isinstance(el.get("bytes"), int) else None
                item.origin = f"threads/{thread_id}/{el['file']}"
                item.fetch = self._file_fetcher(thread_id, el["id"])
            data.elements.append(item)
        return data

    def _file_fetcher(self, thread_id: str, element_id: str) -> Fetch:
        store = self._need()

        async def fetch() -> bytes | None:
            found = store.element_file(thread_id, element_id)
            if found is None:
                return None
            try:
                return found[1].read_bytes()
            except OSError:
                return None

        return fetch

    # writing

    async def user_by_identifier(self, identifier: str) -> dict[str, Any] | None:
        return self.store.get_user(identifier) if self.store else None

    async def is_erased_user(self, user_id: object, identifier: object, created: object) -> bool:
        return self.store is not None and is_erased(self.store, user_id, identifier, created)

    async def user_ids(self) -> set[str]:
        return {u["id"] for u in await self.list_users(None)}

    async def write_user(self, user: dict[str, Any]) -> None:
        store = self._need()
        _codec.check_depth(user.get("metadata"))  # new data here, held as upsert_user's
        path = store.layout.user_file(user["identifier"])
        with _locks.locked(store.layout.users_lock, store.lock_timeout):
            existing = users.read(path)
            doc = dict(user)
            if existing is not None and doc.get("displayName") is None:
                doc["displayName"] = existing.get("displayName")
            users.write(path, doc, durable=True)

    async def unwrite_user(self, user: dict[str, Any]) -> None:
        store = self._need()
        path = store.layout.user_file(user["identifier"])
        with _locks.locked(store.layout.users_lock, store.lock_timeout):
            held = users.read(path)
            if held is not None and held.get("id") == user["id"]:
                path.unlink(missing_ok=True)

    async def delete_thread(self, thread_id: str, deleted_at: str) -> None:
        self._need().delete_thread(thread_id)

    async def erase_thread(self, thread_id: str, deleted_at: str) -> list[str]:
        # Written just after its author's erasure here: deleted, and the index rebuilt
        # as the erasure rebuilds it, so that no free page of it keeps the thread's text.
        store = self._need()
        store.delete_thread(thread_id)
        store.reindex()
        return []

    def item_problem(self, kind: str, item: dict[str, Any]) -> str | None:
        # What the store would refuse (an id that is no path component, a field of the
        # wrong type, data nested too deep), asked of each item before writing any.
        ids = [item.get("id")] + ([item.get("forId")] if kind == "feedback" else [])
        for value in ids:
            why = id_problem(value)
            if why is not None:
                return f"the archive cannot store the id {value!r}: {why}"
        try:
            if kind == "steps":
                check_step_fields(item, str(item["id"]))
                _codec.encode_new_line(journal.step_record(journal.drop_none(item)))
            elif kind == "elements":
                check_element_fields(item, str(item["id"]))
                _codec.encode_new_line(journal.element_record(item))
        except (ValueError, TypeError) as exc:
            return f"the archive cannot store it: {exc}"
        return None

    async def feedback_elsewhere(self, thread_id: str, ids: list[str]) -> set[str]:
        if self.store is None:
            return set()
        self.store.index.refresh()
        owners = {fid: self.store.index.feedback_owner(fid) for fid in ids}
        return {fid for fid, owner in owners.items() if owner not in (None, thread_id)}

    def same_step(self, dest: dict[str, Any], src: dict[str, Any], plan: ThreadPlan) -> bool:
        # The step is unchanged if it reads as the source's (its feedback and streaming
        # flag, which readers add, are not stored): a field the source cleared counts,
        # which the journal's merge of a write would keep (see :meth:`apply`).
        return _step_read(dest, plan.thread_id) == _step_read(src, plan.thread_id)

    def same_element(self, dest: ElementData, src: ElementData, plan: ThreadPlan) -> bool:
        kept = _kept_fields(src, dest.sha256 is not None)
        merged = dict(dest.fields)
        merged.update(journal.drop_none(kept))
        if merged != dest.fields or _cleared(dest.fields, kept):
            return False
        if dest.sha256 is not None:
            return src.sha256 is None or src.sha256 == dest.sha256
        return src.fetch is None  # bytes to fetch that the archive does not hold yet

    def bytes_behind(self, src: ElementData, held: ElementData | None) -> str | None:
        if held is not None and held.sha256 is not None:
            return None
        if src.fetch is None and src.elsewhere and not src.fields.get("url"):
            return (
                "stored under a storage key, and no storage client is configured "
                "(set Chainlit's BUCKET_NAME and S3, GCS or Azure variables)"
            )
        if src.fetch is None and src.elsewhere:
            return (
                "kept as a reference (its bytes could not be read from the source: a URL "
                "is downloaded only with --fetch-urls, a local file only inside the "
                "database's directory)"
            )
        return None

    async def apply(self, plan: ThreadPlan, summary: Summary) -> None:
        store = self._need()
        tid = plan.thread_id
        if plan.thread is not None:
            self._need().put_manifest(plan.thread)
        elif not store.layout.manifest(tid).exists():
            raise FileLayerError(f"thread {tid} has no manifest to add to")
        for step in plan.steps:
            store.write_step({**journal.drop_none(step), "threadId": tid})
        for sid in plan.delete_steps:
            store.delete_step(sid, tid)
        for fid in plan.delete_feedback:
            store.delete_feedback(fid)
        for fb in plan.feedback:
            store.upsert_feedback(
                for_id=fb["forId"],
                value=fb["value"],
                comment=fb.get("comment"),
                feedback_id=fb["id"],
                thread_id=tid,
            )
        for el in plan.elements:
            data = await el.fetch() if el.fetch is not None else None
            if data is None and el.fetch is not None:
                summary.stayed_behind(
                    f"{el.origin or el.fields['id']}: could not be fetched (unreachable, "
                    "too large, or on a private, loopback or link-local address); kept as "
                    "a reference"
                )
            elif el.fetch is None and not el.elsewhere and not el.fields.get("url"):
                # Nothing a browser could load it from: say so rather than keep a blank
                # (an element kept as a reference was listed when planned).
                summary.stayed_behind(
                    f"{el.origin or el.fields['id']}: the source holds no bytes for it "
                    "(no file, URL or storage key)"
                )
            fields = _kept_fields(el, data is not None)
            store.put_element(tid, journal.drop_none(fields), data)
            if data is not None:
                summary.bytes_copied += len(data)
        for eid in plan.delete_elements:
            store.delete_element(eid, tid)
        self._clear_fields(plan)

    def _clear_fields(self, plan: ThreadPlan) -> None:
        """Set each written step and element to exactly the source's. The journal never
        lets a write empty a stored field (Chainlit sends a step with empty text after
        its final one, issue #2789), so a field the source cleared is cleared by
        rewriting the thread's journal with the step's or element's record replaced
        (:meth:`ArchiveStore.compact_journal`, safe while the app writes), and the index
        told (the search must not find the cleared text)."""
        store = self._need()
        tid = plan.thread_id
        now = store.get_thread(tid)
        if now is None:
            return
        held_steps = {s["id"]: s for s in now["steps"]}
        steps = {
            s["id"]: journal.step_body({**s, "threadId": tid})
            for s in plan.steps
            if s["id"] in held_steps and _step_read(held_steps[s["id"]], tid) != _step_read(s, tid)
        }
        held_elements = {e["id"]: e for e in now["elements"]}
        cleared: dict[str, set[str]] = {}
        for el in plan.elements:
            eid = el.fields["id"]
            held = held_elements.get(eid)
            if held is not None:
                keys = _cleared(held, _kept_fields(el, "file" in held))
                if keys:
                    cleared[eid] = keys
        if not steps and not cleared:
            return

        def edit(state: journal.ThreadState) -> None:
            for sid, body in steps.items():
                if sid in state.steps:
                    state.steps[sid] = body
            for eid, keys in cleared.items():
                if eid in state.elements:
                    state.elements[eid] = {
                        k: v for k, v in state.elements[eid].items() if k not in keys
                    }

        done = store.compact_journal(tid, edit=edit)
        if done.skipped:
            raise FileLayerError(
                f"thread {tid}: a field the source cleared could not be cleared here (its "
                f"journal {done.skipped})"
            )
        store.reindex_thread(tid)


def _step_read(step: dict[str, Any], thread_id: str) -> dict[str, Any]:
    """A step as the archive reads it back once stored alone (defaults filled in, times
    to the millisecond), without the fields readers add: for comparing exactly."""
    body = journal.step_body({**step, "threadId": thread_id})
    return normalise_times({**STEP_DEFAULTS, **body})


def _cleared(held: dict[str, Any], kept: dict[str, Any]) -> set[str]:
    """The fields an element holds here that the source's lacks (the archive's own
    aside: its file and digest): merging the source's in would keep them."""
    return {
        k
        for k, v in held.items()
        if v is not None and k not in _ARCHIVE_ONLY_ELEMENT_KEYS and kept.get(k) is None
    }


def _kept_fields(el: ElementData, bytes_kept: bool) -> dict[str, Any]:
    """An element's fields as an archive keeps them: without a link that only pointed at
    bytes the archive now holds itself, nor a storage key a copy chose for them."""
    dropped = set()
    if bytes_kept and el.transient_url:
        dropped.add("url")
    if bytes_kept and el.chosen_key:
        dropped.add("objectKey")  # the copy's choice, not the element's
    return {k: v for k, v in el.fields.items() if k not in dropped} if dropped else el.fields
