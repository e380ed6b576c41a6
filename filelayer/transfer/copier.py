"""The copy itself: :class:`Copier` plans each thread against the destination and
writes only what is missing or different; :func:`copy_archive` is the library entry.

How a copy behaves (ids and times kept, re-runs idempotent, deletions never undone) is
said in :mod:`filelayer.transfer`; the endpoints live in their own modules and depend
only on :mod:`filelayer.transfer.model`."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ArchiveLockTimeout, CopyRefusedError, FileLayerError, StorageWriteError
from ..progress import Progress
from .endpoints import endpoint_kind, open_endpoint
from .model import (
    CopyState,
    CopyUsageError,
    ElementData,
    Endpoint,
    Summary,
    ThreadData,
    ThreadPlan,
    ThreadRef,
    fingerprint,
    since_bound,
    text_problem,
)

_T = TypeVar("_T")


def _itself(item: dict[str, Any]) -> dict[str, Any]:
    return item


def _fields(element: ElementData) -> dict[str, Any]:
    return element.fields


# -- the copy ------------------------------------------------------------------------


@dataclass
class CopyOptions:
    dry_run: bool = False
    user: str | None = None
    since: str | None = None
    create_schema: bool = False


class Copier:
    """Copies users, then thread by thread, each as one unit of work."""

    def __init__(self, source: Endpoint, dest: Endpoint, options: CopyOptions) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.summary = Summary(dry_run=options.dry_run)
        self.user_map: dict[str, str] = {}
        self.dest_user_ids: set[str] = set()
        self.dest_identifiers: dict[str, set[str]] = {}
        """The identifiers each user id of the destination is held under."""
        self.failed_users: set[str] = set()
        """Source ids of the users that could not be written: their threads are not
        copied (without its author a thread would be anyone's to write)."""

    async def run(self, progress: Callable[[int, int], None] | None = None) -> Summary:
        since = since_bound(self.options.since)
        await self.copy_users()
        refs = await self.source.list_threads(self.options.user, since)
        for n, ref in enumerate(refs, start=1):
            if ref.deleted_at is not None:
                await self.propagate_delete(ref)
            else:
                await self.copy_thread(ref.id)
            if progress is not None:
                progress(n, len(refs))
        await self.erase_users()
        self.summary.notes += self.dest.final_notes()
        return self.summary

    async def copy_users(self) -> None:
        self.dest_user_ids = await self.dest.user_ids()
        for held in await self.dest.list_users(None):
            self.dest_identifiers.setdefault(str(held["id"]), set()).add(held["identifier"])
        source_users = await self.source.list_users(self.options.user)
        for uid, why in sorted(self.source.lossy_users().items()):
            self.summary.partly("users", uid, why)
        for user in source_users:
            try:
                await self.copy_user(user)
            except asyncio.CancelledError:
                raise
            except CopyRefusedError as exc:  # as the source holds it, on every run
                self.failed_users.add(str(user.get("id")))
                self.summary.skip("users", str(user.get("id")), str(exc), problem=True)
            except Exception as exc:  # reported; the other users and their threads go on
                self.failed_users.add(str(user.get("id")))
                self.summary.skip("users", str(user.get("id")), failure(exc), problem=True)

    async def copy_user(self, user: dict[str, Any]) -> None:
        """One user, as the destination keeps it (an identifier it already has keeps
        its id there, and this user's threads are attached to it)."""
        if await self.dest.is_erased_user(user["id"], user["identifier"], user["createdAt"]):
            self.summary.skip(
                "users",
                user["id"],
                "erased in the destination (filelayer erase-user); not brought back",
                problem=False,
            )
            return
        if not isinstance(user.get("identifier"), str) or not user["identifier"]:
            raise CopyRefusedError(
                f"its identifier {user.get('identifier')!r} is empty; not copied"
            )
        why = text_problem(user["identifier"])
        if why is not None:
            raise CopyRefusedError(f"its identifier {why}; not copied")
        existing = await self.dest.user_by_identifier(user["identifier"])
        wanted = dict(user)
        if existing is not None and existing["id"] != user["id"]:
            # The identifier is unique on both sides: keep the destination's id and
            # attach this user's threads to it.
            self.user_map[user["id"]] = existing["id"]
            wanted["id"] = existing["id"]
            wanted["createdAt"] = existing["createdAt"]
            self.summary.notes.append(
                f"user {user['identifier']} already exists in the destination with id "
                f"{existing['id']}; its threads were attached to that id"
            )
        others = self.dest_identifiers.get(str(wanted["id"]), set()) - {wanted["identifier"]}
        if others:
            # Written, it would rename that user (a database) or share their id and
            # threads (an archive): users are never merged or renamed.
            raise CopyRefusedError(
                f"its id is already another user's in the destination "
                f"({', '.join(sorted(map(repr, others)))}); not copied: users are never "
                "merged or renamed"
            )
        if existing is not None and self.dest.same_user(existing, wanted):
            self.summary.count("users", "unchanged")
            return
        if not self.options.dry_run:
            await self.dest.write_user(wanted)
            if await self.dest.is_erased_user(user["id"], user["identifier"], user["createdAt"]):
                # Erased while it was written (`filelayer erase-user` removes the record
                # after its tombstone, so one written before that goes with it): taken back.
                await self.dest.unwrite_user(wanted)
                self.summary.skip(
                    "users",
                    user["id"],
                    "erased in the destination (filelayer erase-user) while it was copied; "
                    "not brought back",
                    problem=False,
                )
                return
        self.dest_user_ids.add(wanted["id"])
        self.dest_identifiers.setdefault(str(wanted["id"]), set()).add(wanted["identifier"])
        self.summary.count("users", "copied" if existing is None else "updated")

    async def propagate_delete(self, ref: ThreadRef) -> None:
        """A thread deleted in the source is deleted in the destination too, never
        copied; nothing is reported for tombstones the destination never held."""
        existing = await self.dest.read_thread(ref.id)
        if existing is None:
            return
        if self.options.user is not None:
            author = existing.thread.get("userIdentifier")
            if author != self.options.user:
                return
        thread = existing.thread
        erased = await self.source.is_erased_user(
            thread.get("userId"), thread.get("userIdentifier"), thread.get("createdAt")
        )
        if not self.options.dry_run:
            if erased:
                for key in await self.dest.erase_thread(ref.id, ref.deleted_at or ""):
                    self.summary.skip(
                        "elements",
                        key,
                        f"a file of erased thread {ref.id}: could not be deleted from the "
                        "storage (no storage client, or it failed); delete it there",
                        problem=True,
                    )
            else:
                await self.dest.delete_thread(ref.id, ref.deleted_at or "")
        self.summary.count("threads", "deleted")

    async def erase_users(self) -> None:
        """The destination's records of users erased in the source go too (after their
        threads): the erasure promised that nothing of them stays in the copies."""
        if not self.dest.erases_users:
            return
        for user in await self.dest.list_users(self.options.user):
            if not await self.source.is_erased_user(
                user["id"], user["identifier"], user["createdAt"]
            ):
                continue
            if not self.options.dry_run:
                await self.dest.erase_user(user["id"])
            self.summary.count("users", "deleted")

    async def copy_thread(self, thread_id: str) -> None:
        local = Summary(dry_run=self.options.dry_run)
        try:
            src = await self.source.read_thread(thread_id)
            if src is None:
                return
            for what in src.unreadable:
                self.summary.skip("steps", f"in thread {thread_id}", what, problem=True)
            for kind, item_id, why in src.lossy:
                self.summary.partly(kind, item_id, why)
            if await self.dest.is_deleted(thread_id):
                self.summary.skip(
                    "threads",
                    thread_id,
                    "deleted in the destination; not brought back",
                    problem=False,
                )
                return
            thread = src.thread
            if await self.dest.is_erased_user(
                thread.get("userId"), thread.get("userIdentifier"), thread.get("createdAt")
            ):
                self.summary.skip(
                    "threads",
                    thread_id,
                    "its author was erased in the destination; not brought back",
                    problem=False,
                )
                return
            if thread.get("userId") is not None and str(thread["userId"]) in self.failed_users:
                self.summary.skip(
                    "threads",
                    thread_id,
                    f"its author (user id {thread['userId']}) could not be copied (listed); "
                    "not copied without its author",
                    problem=True,
                )
                return
            author = thread.get("userId")
            if author and self.user_map.get(author, author) not in self.dest_user_ids:
                self.summary.skip(
                    "threads",
                    thread_id,
                    f"its author (user id {author}) is not a user of the source; not copied "
                    "without an author (it would be anyone's to write): give the thread "
                    "to a user, then copy again",
                    problem=True,
                )
                return
            dest = await self.dest.read_thread(thread_id)
            held_by = dest.thread.get("userId") if dest is not None else None
            wanted = str(self.user_map.get(author, author)) if author else None
            if held_by and str(held_by) != wanted:
                # Written, the thread and the messages the destination holds of it would
                # go to another user, or to none (its author would lose it): a thread is
                # never handed over.
                self.summary.skip(
                    "threads",
                    thread_id,
                    f"the destination holds a thread under this id by "
                    f"{'another user' if author else 'a user, and this one has no author'} "
                    f"(user id {held_by}); not copied over it (give one of them a new id)",
                    problem=True,
                )
                return
            copied = fingerprint(src)
            if dest is not None and not await self.dest_may_change(src, dest, copied):
                return
            self.drop_refused(src, dest)
            await self.drop_foreign(src)
            foreign = await self.held_elsewhere_in_source(src, dest)
            plan = self.plan(src, dest, local, foreign)
            if not self.options.dry_run and not plan.empty():
                await self.dest.apply(plan, local)
                if await self.dest.is_erased_user(
                    thread.get("userId"), thread.get("userIdentifier"), thread.get("createdAt")
                ):
                    # Erased while it was written: the erasure's last look for the user's
                    # threads comes after its tombstone, so a write it missed sees it here.
                    await self.dest.erase_thread(thread_id, "")
                    self.summary.skip(
                        "threads",
                        thread_id,
                        "its author was erased in the destination while it was copied; "
                        "not brought back",
                        problem=False,
                    )
                    return
                after = await self.dest.read_thread(thread_id) if self.dest.keeps_state else None
                if after is not None:
                    await self.dest.record_state(thread_id, CopyState(copied, fingerprint(after)))
            elif not self.options.dry_run:
                await self.dest.holds_copy(thread_id)
                if dest is not None and self.dest.keeps_state:
                    state = CopyState(copied, fingerprint(dest))
                    if await self.dest.copy_state(thread_id) != state:  # no write when known
                        await self.dest.record_state(thread_id, state)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported, and the copy goes on
            if not self.options.dry_run and await self._deleted_meanwhile(thread_id):
                # The app of the destination deleted it while it was copied: the
                # deletion wins, as it does over any late write.
                self.summary.skip(
                    "threads",
                    thread_id,
                    "deleted in the destination while it was copied; not brought back",
                    problem=False,
                )
                return
            self.summary.skip("threads", thread_id, failure(exc), problem=True)
            return
        self.summary.merge(local)

    async def dest_may_change(self, src: ThreadData, dest: ThreadData, copied: str) -> bool:
        """Whether the source's thread may be written over what the destination holds,
        ``copied`` being the digest of the source's; if not, say why in the summary.

        Decided by content where the destination keeps a record of the last copy
        (:meth:`~.model.Endpoint.copy_state`): a destination that still holds what that
        copy left takes the source's, whatever the times say (a deletion in the source
        can make its last activity older than the destination's); one that does not
        was changed there since (an edit in place need not change a time) and keeps its
        own, and if the source changed too the thread is a conflict, listed as a
        problem: either way an edit would be lost. Without a record (a first copy, a
        destination filled by an earlier version, or an archive), by times: the
        destination's is kept if its last activity is the later."""
        tid = str(src.thread["id"])
        state = await self.dest.copy_state(tid)
        if state is not None:
            if fingerprint(dest) == state.dest:
                return True
            if copied == state.source:
                self.summary.skip(
                    "threads",
                    tid,
                    "changed in the destination since the last copy, and not in the "
                    "source; left as it is",
                    problem=False,
                )
            else:
                self.summary.skip(
                    "threads",
                    tid,
                    "changed in both the source and the destination since the last "
                    "copy; left as the destination has it (to have the source's copied over "
                    "it, delete the thread's line from filelayer_copy_state there)",
                    problem=True,
                )
            return False
        if dest.activity() <= src.activity():
            return True
        if not self.options.dry_run:
            await self.dest.holds_copy(tid)
        self.summary.skip(
            "threads",
            tid,
            f"changed in the destination ({dest.activity()}) after the source "
            f"({src.activity()}); left as it is",
            problem=False,
        )
        return False

    async def _deleted_meanwhile(self, thread_id: str) -> bool:
        """Whether the destination holds ``thread_id`` as deleted now (``False`` if it
        cannot even say)."""
        try:
            return await self.dest.is_deleted(thread_id)
        except Exception:  # the failure reported is the copy's own
            return False

    def drop_refused(self, src: ThreadData, dest: ThreadData | None) -> None:
        """Leave out, and list, each item the destination cannot store at all: checked
        for the whole thread before anything of it is written, so the rest is copied
        whole instead of the thread stopping half written on every run. What the
        destination already holds under a refused item's id stays as it is (it is not
        taken for deleted in the source)."""
        held = dest or ThreadData(thread={})
        src.steps = self._storable("steps", src.steps, held.steps, _itself)
        src.feedback = self._storable("feedback", src.feedback, held.feedback, _itself)
        src.elements = self._storable("elements", src.elements, held.elements, _fields)

    async def drop_foreign(self, src: ThreadData) -> None:
        """Leave out, and list, each step, element or feedback whose id another thread of
        the destination holds (a database holds each id once, an archive keeps steps
        and elements thread by thread): written, it would be taken from that thread, and
        on the next copy of that thread taken back. The rest of the thread is copied."""
        tid = src.thread["id"]
        kinds: list[tuple[str, list[Any], Callable[[Any], dict[str, Any]]]] = [
            ("steps", src.steps, _itself),
            ("elements", src.elements, _fields),
            ("feedback", src.feedback, _itself),
        ]
        kept: dict[str, list[Any]] = {}
        for kind, items, fields in kinds:
            taken = await self.dest.ids_elsewhere(kind, tid, [fields(i)["id"] for i in items])
            for item in items:
                if fields(item)["id"] in taken:
                    self.summary.skip(
                        kind,
                        str(fields(item)["id"]),
                        f"its id is already used by another thread of the destination; not "
                        f"copied into thread {tid} (give it a new id in the source to copy it)",
                        problem=True,
                    )
            kept[kind] = [i for i in items if fields(i)["id"] not in taken]
        src.steps, src.elements, src.feedback = kept["steps"], kept["elements"], kept["feedback"]

    async def held_elsewhere_in_source(self, src: ThreadData, dest: ThreadData | None) -> set[str]:
        """The ids of what the destination holds of the thread and the source lacks
        because another thread of the source holds them (a database holds each id once):
        a copy into the source left them out, so their absence says nothing of a
        deletion. Asked only of a source that keeps no record of deletions."""
        if dest is None or self.source.records_deletions:
            return set()
        tid = src.thread["id"]
        steps, elements = {s["id"] for s in src.steps}, {e.fields["id"] for e in src.elements}
        feedback = {f["id"] for f in src.feedback}
        missing = {
            "steps": [s["id"] for s in dest.steps if s["id"] not in steps],
            "elements": [e.fields["id"] for e in dest.elements if e.fields["id"] not in elements],
            "feedback": [f["id"] for f in dest.feedback if f["id"] not in feedback],
        }
        foreign: set[str] = set()
        for kind, ids in missing.items():
            if ids:
                foreign |= await self.source.ids_elsewhere(kind, tid, ids)
        return foreign

    def _storable(
        self, kind: str, items: list[_T], held: list[_T], fields: Callable[[_T], dict[str, Any]]
    ) -> list[_T]:
        theirs = {fields(item).get("id"): item for item in held}
        out = []
        for item in items:
            item_id = fields(item).get("id")
            why = self.dest.item_problem(kind, fields(item))
            if why is None:
                out.append(item)
                continue
            self.summary.skip(kind, str(item_id), why, problem=True)
            if item_id in theirs:
                out.append(theirs[item_id])
        return out

    def plan(
        self,
        src: ThreadData,
        dest: ThreadData | None,
        local: Summary,
        foreign: frozenset[str] | set[str] = frozenset(),
    ) -> ThreadPlan:
        tid = src.thread["id"]
        thread = dict(src.thread)
        uid = thread.get("userId")
        if uid:
            uid = self.user_map.get(uid, uid)
            thread["userId"] = uid
        plan = ThreadPlan(thread_id=tid, thread=None, source_steps=src.steps)
        plan.user_id = thread.get("userId")
        plan.thread_created = str(thread.get("createdAt") or thread.get("updatedAt") or "")
        if dest is not None:
            # What the source cannot store is unknown there, not emptied: kept as it is.
            for key in self.source.unstored_thread_fields():
                if key in dest.thread:
                    thread[key] = dest.thread[key]
        if dest is None:
            plan.thread = thread
            local.count("threads", "copied")
        elif self.dest.same_thread(dest.thread, thread):
            local.count("threads", "unchanged")
        else:
            plan.thread = thread
            local.count("threads", "updated")
        dest = dest or ThreadData(thread={})
        if not self.source.records_deletions:
            self.infer_deletions(src, dest, foreign)

        dest_steps = {s["id"]: s for s in dest.steps}
        plan.all_step_ids = {s["id"] for s in src.steps if s["id"] not in dest.deleted_steps}
        plan.all_step_ids |= set(dest_steps)
        for step in src.steps:
            sid = step["id"]
            if sid in dest.deleted_steps:
                local.skip("steps", sid, "deleted in the destination", problem=False)
            elif sid in dest_steps and self.dest.same_step(dest_steps[sid], step, plan):
                local.count("steps", "unchanged")
            else:
                plan.steps.append(step)
                self.dest.planned_step(step)
                local.count("steps", "updated" if sid in dest_steps else "copied")
        for sid in sorted(src.deleted_steps & set(dest_steps)):
            plan.delete_steps.append(sid)
            plan.all_step_ids.discard(sid)
            local.count("steps", "deleted")

        dest_fb = {f["id"]: f for f in dest.feedback}
        src_for = {f["forId"] for f in src.feedback}
        for fb in src.feedback:
            problem = feedback_problem(fb, plan.all_step_ids)
            if problem is not None:
                local.skip("feedback", fb["id"], problem, problem=True)
            elif fb["id"] in dest_fb and self.dest.same_feedback(dest_fb[fb["id"]], fb):
                local.count("feedback", "unchanged")
            else:
                plan.feedback.append(fb)
                local.count("feedback", "updated" if fb["id"] in dest_fb else "copied")
        for fid, fb in sorted(dest_fb.items()):
            replaced = fb.get("forId") in src_for and fid not in {f["id"] for f in src.feedback}
            if fid in src.deleted_feedback or replaced:
                plan.delete_feedback.append(fid)
                local.count("feedback", "deleted")

        dest_el = {e.fields["id"]: e for e in dest.elements}
        for el in src.elements:
            eid = el.fields["id"]
            problem = self.dest.element_problem(el, plan)
            held = dest_el.get(eid)
            if eid in dest.deleted_elements:
                local.skip("elements", eid, "deleted in the destination", problem=False)
                continue
            if problem is not None:
                local.skip("elements", eid, problem, problem=True)
                continue
            if held is not None and self.dest.same_element(held, el, plan):
                local.count("elements", "unchanged")
            else:
                plan.elements.append(el)
                local.count("elements", "updated" if held is not None else "copied")
                if self.options.dry_run and el.size and not self.dest.bytes_behind(el, held):
                    local.bytes_copied += el.size
            behind = self.dest.bytes_behind(el, held)
            if behind is not None:
                local.stayed_behind(f"{el.origin or eid}: {behind}")
        for eid in sorted(src.deleted_elements & set(dest_el)):
            plan.delete_elements.append(eid)
            local.count("elements", "deleted")
        return plan

    def infer_deletions(
        self, src: ThreadData, dest: ThreadData, foreign: frozenset[str] | set[str] = frozenset()
    ) -> None:
        """For a source that keeps no record of deletions (a database): what the
        destination holds of the thread and the source lacks was deleted there, but only
        what the source could have held. An element attached to no step, a feedback or
        element whose step the source lacks, an id it cannot take or holds in another
        thread (``foreign``): a copy into it skipped them, so their absence says
        nothing."""
        source = self.source
        step_ids = {s["id"] for s in src.steps}
        held = ThreadPlan(thread_id=src.thread["id"], thread=None, all_step_ids=step_ids)
        src.deleted_steps |= {
            s["id"]
            for s in dest.steps
            if s["id"] not in step_ids and source.holds_id(s["id"]) and s["id"] not in foreign
        }
        have = {e.fields["id"] for e in src.elements}
        src.deleted_elements |= {
            e.fields["id"]
            for e in dest.elements
            if e.fields["id"] not in have
            and source.holds_id(e.fields["id"])
            and e.fields["id"] not in foreign
            and source.element_problem(e, held) is None
        }
        have = {f["id"] for f in src.feedback}
        src.deleted_feedback |= {
            f["id"]
            for f in dest.feedback
            if f["id"] not in have
            and source.holds_id(f["id"])
            and f["id"] not in foreign
            and feedback_problem(f, step_ids) is None
        }


def feedback_problem(fb: dict[str, Any], step_ids: set[str]) -> str | None:
    """Why a feedback cannot be copied into a thread with these steps (``None``: it can)."""
    if fb.get("value") not in (0, 1):
        return f"value {fb.get('value')!r} is not 0 or 1"
    if fb.get("forId") not in step_ids:
        return "its step is not in the thread"
    return None


def transient(exc: BaseException) -> bool:
    """Whether running the copy again, as it is, may succeed where ``exc`` stopped it: a
    lost connection, a lock, a full disk. Not a value the destination refuses, which would
    fail the same way on every run."""
    if isinstance(exc, StorageWriteError):
        return exc.errno != errno.ELOOP  # a link in place of a directory stays one
    if isinstance(exc, ArchiveLockTimeout):
        return True
    if isinstance(exc, FileLayerError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        # connection, transaction rollback (deadlock, serialization), resources,
        # operator intervention, lock not available
        return state[:2] in ("08", "40", "53", "57") or state == "55P03"
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc) for word in ("locked", "busy", "disk"))
    return type(exc).__name__ in ("InterfaceError", "ConnectionDoesNotExistError")


def failure(exc: BaseException) -> str:
    """What the summary says of an item that ``exc`` kept from being written: to run the
    copy again only when that may help."""
    said = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, StorageWriteError) and exc.errno == errno.ELOOP:
        return (
            f"not copied: its directory in the destination is a symbolic link ({said}); "
            "`filelayer verify --repair` removes it"
        )
    if transient(exc):
        return f"not copied ({said}); run the copy again"
    return (
        f"not copied: the destination refuses it ({said}); running the copy again will "
        "not change that"
    )


async def copy_archive(
    source: str,
    dest: str,
    *,
    dry_run: bool = False,
    user: str | None = None,
    since: str | None = None,
    create_schema: bool = False,
    fetch_urls: bool = False,
    files_dir: str | None = None,
    schema: str | None = None,
    storage: Any = None,
    progress: Progress | None = None,
) -> Summary:
    """Copy from ``source`` to ``dest`` (each an archive root or a database URL) and say
    what happened; the function behind the command, for programs and tests.

    ``schema`` says which of Chainlit's schemas a plain postgresql:// URL holds;
    ``storage`` is a storage client for element bytes on the database side(s);
    ``fetch_urls`` downloads the bytes behind the source rows' http(s) URLs (public
    addresses only: a row may name any URL); ``files_dir`` is the directory whose files
    a SQLite source's rows may name (none by default: a row may name any file)."""
    if source == dest:
        raise CopyUsageError("SOURCE and DEST are the same")
    options = CopyOptions(dry_run=dry_run, user=user, since=since, create_schema=create_schema)
    since_bound(since)  # a bad date is a usage error before connecting
    endpoint_kind(source, schema), endpoint_kind(dest, schema)  # usage errors first
    kw: dict[str, Any] = {
        "fetch_urls": fetch_urls,
        "files_dir": files_dir,
        "schema": schema,
        "storage": storage,
    }
    src = await open_endpoint(source, **kw)
    dst = await open_endpoint(dest, **kw)
    if create_schema and not hasattr(dst, "apply_schema"):
        raise CopyUsageError(
            "--create-schema applies to a database destination (postgresql:// or sqlite:///) only"
        )
    try:
        await src.open(create=False, dry_run=dry_run, create_schema=False)
        await dst.open(create=True, dry_run=dry_run, create_schema=create_schema)
        return await Copier(src, dst, options).run(progress)
    finally:
        # Each side is closed whatever closing the other did: the destination's close
        # also ends its maintenance announcement.
        try:
            if progress is not None:
                progress.close()
        finally:
            try:
                await src.close()
            finally:
                await dst.close()
