"""What the reliability tests (``tests/reliability/test_reliability_*.py``) share.

- Seeds and scale: a normal run is deterministic: seeded tests use ``FIXED_SEED`` and
  Hypothesis the derandomized ``"ci"`` profile. ``FILELAYER_STRESS=1`` switches every
  test to its heavy counts, a seed drawn per run (printed in pytest's header and on
  failure) and Hypothesis's random ``"stress"`` profile; ``FILELAYER_SEED`` fixes the
  seed of either.
- ``StoreAPI`` and ``LayerAPI``: one synchronous surface over ``ArchiveStore`` (no
  Chainlit needed) and over ``FileDataLayer`` (through Chainlit's own types), so a test
  can drive either with the same operations.
- ``ContractModel``: the data-layer contract as a small in-memory model. It is what the
  model-based and the crash tests compare the archive against; read it as the contract.
- The crash workload: the Chainlit-shaped chat turns of ``benchmarks/workload.py``, plus
  elements with bytes and thread updates, as an endless, seeded stream of operations.
- The writer processes: run as a script this module is a fork server that starts killable
  writers (``zygote``), a writer for the multi-process test (``proc-writer``) and the
  maintenance loop that compacts and reindexes meanwhile (``maintainer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty, Queue
from types import ModuleType
from typing import Any

from tests.support.processes import subprocess_env

HERE = Path(__file__).resolve()

MESSAGE_TYPES = frozenset(["user_message", "assistant_message", "system_message"])
SEARCH_CHARS = 2000


# -- seeds and scale ------------------------------------------------------------------------


def stress() -> bool:
    """``FILELAYER_STRESS=1``: the heavy counts (hundreds of kills, more processes...)."""
    return os.environ.get("FILELAYER_STRESS", "").strip() not in ("", "0")


def scaled(quick: int, heavy: int) -> int:
    """A count for this run: ``heavy`` under FILELAYER_STRESS=1, else ``quick``."""
    env = os.environ.get("FILELAYER_SCALE")
    if env:  # an explicit count wins (e.g. FILELAYER_SCALE=500 for a longer kill run)
        return int(env)
    return heavy if stress() else quick


FIXED_SEED = 1
"""The seed of every seeded test outside stress runs, so that CI runs the same cases."""

_drawn_seed: list[int] = []


def seed() -> int:
    """The seed of this run: ``FILELAYER_SEED`` if set; else, under
    ``FILELAYER_STRESS=1``, one drawn once per process (pytest prints it in its header,
    and failing tests print it); else ``FIXED_SEED``, the same on every run."""
    value = os.environ.get("FILELAYER_SEED", "").strip()
    if value:
        return int(value)
    if not stress():
        return FIXED_SEED
    if not _drawn_seed:
        _drawn_seed.append(random.SystemRandom().randrange(1, 2**31))
    return _drawn_seed[0]


def hypothesis_profile() -> str:
    """The Hypothesis profile of this run (registered in ``conftest.py``): ``"ci"``,
    derandomized (every run tries the same examples), or, under
    ``FILELAYER_STRESS=1``, ``"stress"``, which explores at random."""
    return "stress" if stress() else "ci"


def hypothesis_settings(quick: int, heavy: int, **extra: Any) -> Any:
    """Hypothesis settings: ``quick``/``heavy`` examples and no deadline, on top of the
    profile ``conftest.py`` loaded (:func:`hypothesis_profile`: no example database,
    derandomized unless stress)."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=scaled(quick, heavy),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **extra,
    )


def seeded(test: Any) -> Any:
    """Seed a Hypothesis test or state machine with :func:`seed` (``hypothesis.seed``)
    when the seed was chosen (``FILELAYER_SEED``) or drawn (a stress run), so that
    ``FILELAYER_SEED`` replays it. Otherwise the ``"ci"`` profile derandomizes it."""
    from hypothesis import seed as hypothesis_seed

    if os.environ.get("FILELAYER_SEED", "").strip() or stress():
        return hypothesis_seed(seed())(test)
    return test


def have_chainlit() -> bool:
    return importlib.util.find_spec("chainlit") is not None


# -- the command line -----------------------------------------------------------------------


def cli(
    root: Path, *args: str, cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m filelayer --root ROOT ARGS...`` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "filelayer", "--root", str(root), *args],
        cwd=cwd,
        env=subprocess_env(same_mode=True),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- one synchronous surface over the store and over the data layer ---------------------------


class StoreAPI:
    """The operations of the contract, straight on ``ArchiveStore`` (no Chainlit)."""

    backend = "store"

    def __init__(self, root: Path, durability: str = "flush") -> None:
        from filelayer import ArchiveStore

        self.store = ArchiveStore(root, durability=durability)  # type: ignore[arg-type]

    def create_user(
        self, identifier: str, metadata: dict[str, Any] | None = None, display_name: Any = None
    ) -> dict[str, Any]:
        doc = self.store.upsert_user(identifier, metadata=metadata or {}, display_name=display_name)
        return {"id": doc["id"], "identifier": doc["identifier"], "metadata": doc["metadata"]}

    def get_user(self, identifier: str) -> dict[str, Any] | None:
        doc = self.store.get_user(identifier)
        if doc is None:
            return None
        return {"id": doc["id"], "identifier": doc["identifier"], "metadata": doc["metadata"]}

    def update_thread(self, thread_id: str, **kwargs: Any) -> None:
        self.store.update_thread(thread_id, **kwargs)

    def create_step(self, step: dict[str, Any]) -> None:
        self.store.write_step(dict(step))

    update_step = create_step

    def delete_step(self, step_id: str) -> None:
        self.store.delete_step(step_id)

    def upsert_feedback(
        self,
        for_id: str,
        value: int,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
    ) -> str:
        return self.store.upsert_feedback(
            for_id=for_id,
            value=value,
            comment=comment,
            feedback_id=feedback_id,
            thread_id=thread_id,
        )

    def delete_feedback(self, feedback_id: str) -> bool:
        return self.store.delete_feedback(feedback_id)

    def create_element(self, spec: dict[str, Any]) -> None:
        element = {
            "id": spec["id"],
            "type": spec.get("type", "file"),
            "name": spec["name"],
            "display": spec.get("display", "inline"),
            "forId": spec.get("forId"),
            "mime": spec.get("mime"),
            "url": spec.get("url"),
        }
        self.store.put_element(spec["threadId"], element, spec.get("content"))

    def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        self.store.delete_element(element_id, thread_id)

    def get_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        return self.store.get_element(thread_id, element_id)

    def element_bytes(self, thread_id: str, element_id: str) -> bytes | None:
        found = self.store.element_file(thread_id, element_id)
        return found[1].read_bytes() if found else None

    def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        return self.store.get_thread(thread_id)

    def get_thread_author(self, thread_id: str) -> str:
        return self.store.thread_author(thread_id)

    def delete_thread(self, thread_id: str) -> None:
        self.store.delete_thread(thread_id)

    def list_threads(
        self,
        user_id: str | None,
        first: int = 20,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> tuple[list[dict[str, Any]], bool, str | None]:
        threads, page = self.store.list_threads(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )
        return threads, page.has_next, page.end_cursor

    def close(self) -> None:
        self.store.close()


class LayerAPI(StoreAPI):
    """The same operations through ``FileDataLayer`` and Chainlit's own types, awaited
    one by one on a private event loop inside an HTTP-like Chainlit context (where the
    queued methods run at once)."""

    backend = "layer"

    def __init__(self, root: Path, durability: str = "flush") -> None:
        from filelayer import FileDataLayer

        self.loop = asyncio.new_event_loop()
        self.layer = FileDataLayer(
            root, durability=durability, element_url=lambda t, e: f"/elements/{t}/{e}"
        )  # type: ignore[arg-type]
        self.store = self.layer.store
        self._context = self.loop.run_until_complete(self._new_context())

    @staticmethod
    async def _new_context() -> Any:
        from chainlit.context import init_http_context

        return init_http_context()

    def _call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            from chainlit.context import context_var

            context_var.set(self._context)
            return await getattr(self.layer, method)(*args, **kwargs)

        return self.loop.run_until_complete(call())

    def create_user(
        self, identifier: str, metadata: dict[str, Any] | None = None, display_name: Any = None
    ) -> dict[str, Any]:
        from chainlit.user import User

        user = self._call(
            "create_user",
            User(identifier=identifier, metadata=metadata or {}, display_name=display_name),
        )
        return {"id": user.id, "identifier": user.identifier, "metadata": user.metadata}

    def get_user(self, identifier: str) -> dict[str, Any] | None:
        user = self._call("get_user", identifier)
        if user is None:
            return None
        return {"id": user.id, "identifier": user.identifier, "metadata": user.metadata}

    def update_thread(self, thread_id: str, **kwargs: Any) -> None:
        self._call("update_thread", thread_id, **kwargs)

    def create_step(self, step: dict[str, Any]) -> None:
        self._call("create_step", dict(step))

    def update_step(self, step: dict[str, Any]) -> None:
        self._call("update_step", dict(step))

    def delete_step(self, step_id: str) -> None:
        self._call("delete_step", step_id)

    def upsert_feedback(
        self,
        for_id: str,
        value: int,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
    ) -> str:
        from chainlit.types import Feedback

        fb = Feedback(
            forId=for_id, value=value, comment=comment, id=feedback_id, threadId=thread_id
        )  # type: ignore[arg-type]
        result: str = self._call("upsert_feedback", fb)
        return result

    def delete_feedback(self, feedback_id: str) -> bool:
        result: bool = self._call("delete_feedback", feedback_id)
        return result

    def create_element(self, spec: dict[str, Any]) -> None:
        from chainlit.element import File, Image

        kind = Image if spec.get("type") == "image" else File
        kwargs: dict[str, Any] = {
            "id": spec["id"],
            "name": spec["name"],
            "thread_id": spec["threadId"],
            "for_id": spec.get("forId"),
            "display": spec.get("display", "inline"),
        }
        if spec.get("content") is not None:
            kwargs["content"] = spec["content"]
        if spec.get("url"):
            kwargs["url"] = spec["url"]
        if spec.get("mime"):
            kwargs["mime"] = spec["mime"]
        self._call("create_element", kind(**kwargs))

    def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        self._call("delete_element", element_id, thread_id)

    def get_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("get_element", thread_id, element_id)
        return result

    def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("get_thread", thread_id)
        return result

    def get_thread_author(self, thread_id: str) -> str:
        result: str = self._call("get_thread_author", thread_id)
        return result

    def delete_thread(self, thread_id: str) -> None:
        self._call("delete_thread", thread_id)

    def list_threads(
        self,
        user_id: str | None,
        first: int = 20,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> tuple[list[dict[str, Any]], bool, str | None]:
        from chainlit.types import Pagination, ThreadFilter

        response = self._call(
            "list_threads",
            Pagination(first=first, cursor=cursor),
            ThreadFilter(userId=user_id, search=search, feedback=feedback),
        )
        return list(response.data), response.pageInfo.hasNextPage, response.pageInfo.endCursor

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self._call("close")
        self.loop.close()


def open_api(root: Path, backend: str, durability: str = "flush") -> StoreAPI:
    return (LayerAPI if backend == "layer" else StoreAPI)(root, durability)


# -- the contract, as a model -----------------------------------------------------------------


def merge_step(stored: dict[str, Any], incoming: dict[str, Any]) -> None:
    """A later write of a step: its fields win, except that ``None`` never writes, an
    empty string or dict never overwrites content, ``createdAt``/``start`` keep the
    earliest value and ``end`` the latest (Chainlit fires step writes as independent
    tasks; an empty ``send()`` landing after the final ``update()`` must not wipe it)."""
    for key, value in incoming.items():
        if value is None:
            continue
        old = stored.get(key)
        if key in ("createdAt", "start") and isinstance(old, str) and isinstance(value, str):
            stored[key] = min(old, value) if old else value
        elif key == "end" and isinstance(old, str) and isinstance(value, str):
            stored[key] = max(old, value)
        elif value in ("", {}) and not isinstance(value, bool) and old:
            continue
        else:
            stored[key] = value


def merge_metadata(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Thread metadata: merged key by key; a key set to ``None`` is removed."""
    merged = {k: v for k, v in base.items() if not (k in update and update[k] is None)}
    merged.update({k: v for k, v in update.items() if v is not None})
    return merged


@dataclass
class ModelThread:
    name: str | None = None
    user_id: str | None = None
    user_identifier: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrival: dict[str, int] = field(default_factory=dict)
    deleted_steps: set[str] = field(default_factory=set)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    elements: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_elements: set[str] = field(default_factory=set)

    def visible_feedback(self) -> dict[str, dict[str, Any]]:
        """step id -> its feedback, for steps that exist."""
        return {fb["forId"]: fb for fb in self.feedback.values() if fb["forId"] in self.steps}

    def live_elements(self) -> dict[str, dict[str, Any]]:
        return {
            eid: el
            for eid, el in self.elements.items()
            if el.get("forId") not in self.deleted_steps
        }

    def message_times(self) -> list[str]:
        times = []
        for step in self.steps.values():
            if step.get("type") in MESSAGE_TYPES:
                at = step.get("createdAt") or step.get("start") or ""
                times.append(at if isinstance(at, str) else "")
        return times

    def search_texts(self) -> list[str]:
        texts = [self.name] if self.name else []
        for step in self.steps.values():
            if step.get("type") in MESSAGE_TYPES and isinstance(step.get("output"), str):
                texts.append(step["output"][:SEARCH_CHARS])
        return texts


class ContractModel:
    """The data-layer contract in memory: what every read must answer after a sequence
    of writes. Deliberately plain: one dict per thread, the rules spelled out."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}  # identifier -> {id, metadata}
        self.threads: dict[str, ModelThread] = {}
        self.deleted: set[str] = set()
        self.step_owner: dict[str, str] = {}
        self._seq = 0

    def copy(self) -> ContractModel:
        return copy.deepcopy(self)

    # users: an identifier keeps its id forever; metadata is replaced by the last login.
    def create_user(self, identifier: str, user_id: str, metadata: dict[str, Any]) -> str:
        known = self.users.get(identifier)
        if known is None:
            self.users[identifier] = {"id": user_id, "metadata": dict(metadata)}
            return user_id
        known["metadata"] = dict(metadata)
        return str(known["id"])

    def identifier_of(self, user_id: str) -> str | None:
        for identifier, doc in self.users.items():
            if doc["id"] == user_id:
                return identifier
        return None

    def _thread(self, thread_id: str) -> ModelThread | None:
        """The thread a write goes to, created if new; ``None`` once deleted (a late
        write never brings a deleted thread back)."""
        if thread_id in self.deleted:
            return None
        return self.threads.setdefault(thread_id, ModelThread())

    def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        thread = self._thread(thread_id)
        if thread is None:
            return
        if name is None and metadata and isinstance(metadata.get("name"), str):
            name = metadata["name"]  # as Chainlit's SQL layer: the name may ride in metadata
        if name is not None:
            thread.name = name
        if user_id is not None:
            identifier = self.identifier_of(user_id)
            if identifier is not None or user_id != thread.user_id:
                thread.user_identifier = identifier
            thread.user_id = user_id
        if tags is not None:
            thread.tags = list(tags)
        if metadata is not None:
            thread.metadata = merge_metadata(thread.metadata, metadata)

    def delete_thread(self, thread_id: str) -> None:
        self.deleted.add(thread_id)
        self.threads.pop(thread_id, None)

    def write_step(self, step: dict[str, Any]) -> None:
        thread_id = step["threadId"]
        thread = self._thread(thread_id)
        if thread is None:
            return
        sid = step["id"]
        self.step_owner.setdefault(sid, thread_id)
        if sid in thread.deleted_steps:
            return  # a late write does not bring a deleted step back
        incoming = {k: v for k, v in step.items() if v is not None}
        if sid in thread.steps:
            merge_step(thread.steps[sid], incoming)
        else:
            thread.steps[sid] = incoming
            thread.arrival[sid] = self._seq
            self._seq += 1

    def locate(self, step_id: str) -> str | None:
        """The thread that holds ``step_id`` now (Chainlit gives no thread id to
        ``delete_step`` and, from some clients, to ``upsert_feedback``)."""
        thread_id = self.step_owner.get(step_id)
        thread = self.threads.get(thread_id) if thread_id else None
        return thread_id if thread is not None and step_id in thread.steps else None

    def delete_step(self, step_id: str) -> None:
        thread_id = self.locate(step_id)
        if thread_id is None:
            return
        thread = self.threads[thread_id]
        thread.deleted_steps.add(step_id)
        thread.steps.pop(step_id)
        thread.feedback = {f: fb for f, fb in thread.feedback.items() if fb["forId"] != step_id}
        for eid in [e for e, el in thread.elements.items() if el.get("forId") == step_id]:
            thread.elements.pop(eid)
            thread.deleted_elements.add(eid)

    def upsert_feedback(
        self, thread_id: str, feedback_id: str, for_id: str, value: int, comment: str | None
    ) -> None:
        thread = self._thread(thread_id)
        if thread is None or for_id in thread.deleted_steps:
            return
        # One feedback per step: a new id for the same step replaces the old one.
        thread.feedback = {f: fb for f, fb in thread.feedback.items() if fb["forId"] != for_id}
        thread.feedback[feedback_id] = {
            "id": feedback_id,
            "forId": for_id,
            "value": value,
            "comment": comment,
        }

    def delete_feedback(self, feedback_id: str) -> None:
        for thread in self.threads.values():
            thread.feedback.pop(feedback_id, None)

    def create_element(self, spec: dict[str, Any]) -> None:
        thread = self._thread(spec["threadId"])
        if thread is None or spec["id"] in thread.deleted_elements:
            return
        if spec.get("forId") in thread.deleted_steps:
            # Sent for a deleted step: deleted with it, exactly as if it had come before
            # the step was deleted (whichever lands first, the element is gone for good,
            # and no later re-send, with or without a step, brings it back).
            thread.elements.pop(spec["id"], None)
            thread.deleted_elements.add(spec["id"])
            return
        fields = {k: v for k, v in spec.items() if v is not None and k != "threadId"}
        thread.elements.setdefault(spec["id"], {}).update(fields)  # an upsert by id

    def delete_element(self, element_id: str, thread_id: str) -> None:
        thread = self.threads.get(thread_id)
        if thread is None:
            return
        thread.elements.pop(element_id, None)
        thread.deleted_elements.add(element_id)

    # -- reads -----------------------------------------------------------------------------

    def author(self, thread_id: str) -> str:
        thread = self.threads.get(thread_id)
        return (thread.user_identifier or "") if thread else ""

    def list_ids(
        self, user_id: str | None, search: str | None = None, feedback: int | None = None
    ) -> set[str]:
        """The threads ``list_threads`` answers (order is checked on the answer itself)."""
        found = set()
        needle = search.casefold() if search else None
        for thread_id, thread in self.threads.items():
            if user_id is not None and thread.user_id != user_id:
                continue
            if feedback is not None and not any(
                fb["value"] == feedback for fb in thread.visible_feedback().values()
            ):
                continue
            if needle is not None and not any(
                needle in text.casefold() for text in thread.search_texts()
            ):
                continue
            found.add(thread_id)
        return found


def thread_projection(thread: dict[str, Any], element_bytes: Any) -> dict[str, Any]:
    """What a test compares of a ``get_thread`` answer."""
    steps = {}
    for step in thread["steps"]:
        fb = step.get("feedback")
        steps[step["id"]] = {
            **{k: v for k, v in step.items() if k not in ("feedback", "streaming")},
            "feedback": (fb["id"], fb["value"], fb.get("comment")) if fb else None,
        }
    elements = {}
    for el in thread["elements"]:
        elements[el["id"]] = {
            "forId": el.get("forId"),
            "name": el.get("name"),
            "type": el.get("type"),
            "bytes": element_bytes(thread["id"], el["id"]),
        }
    return {
        "name": thread["name"],
        "userId": thread["userId"],
        "userIdentifier": thread["userIdentifier"],
        "tags": thread["tags"],
        "metadata": thread["metadata"],
        "steps": steps,
        "elements": elements,
    }


def model_projection(model: ContractModel, thread_id: str) -> dict[str, Any] | None:
    """The projection the model expects for ``thread_id`` (``None``: no such thread)."""
    thread = model.threads.get(thread_id)
    if thread is None:
        return None
    feedback = thread.visible_feedback()
    steps = {}
    for sid, stored in thread.steps.items():
        fb = feedback.get(sid)
        steps[sid] = {
            **{k: v for k, v in stored.items() if k != "streaming"},
            "threadId": thread_id,
            "feedback": (fb["id"], fb["value"], fb["comment"]) if fb else None,
        }
    elements = {
        eid: {
            "forId": el.get("forId"),
            "name": el.get("name"),
            "type": el.get("type", "file"),
            "bytes": el.get("content"),
        }
        for eid, el in thread.live_elements().items()
    }
    return {
        "name": thread.name,
        "userId": thread.user_id,
        "userIdentifier": thread.user_identifier,
        "tags": thread.tags,
        "metadata": thread.metadata,
        "steps": steps,
        "elements": elements,
    }


def compare_projection(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Differences between a thread's projection and the model's (empty: they agree).

    Steps are compared on the fields the model knows (what was written); the answer
    may add Chainlit's defaults for fields never written.
    """
    problems = []
    for key in ("name", "userId", "userIdentifier", "tags", "metadata", "elements"):
        if actual[key] != expected[key]:
            problems.append(f"{key}: got {actual[key]!r}, expected {expected[key]!r}")
    if set(actual["steps"]) != set(expected["steps"]):
        problems.append(
            f"step ids: missing {sorted(set(expected['steps']) - set(actual['steps']))}, "
            f"unexpected {sorted(set(actual['steps']) - set(expected['steps']))}"
        )
    for sid, want in expected["steps"].items():
        got = actual["steps"].get(sid)
        if got is None:
            continue
        for key, value in want.items():
            if got.get(key) != value:
                problems.append(f"step {sid} {key}: got {got.get(key)!r}, expected {value!r}")
    return problems


def order_problems(steps: list[dict[str, Any]], arrival: dict[str, int]) -> list[str]:
    """Check the order contract of ``get_thread``'s steps: each id once, every parent
    before its children, top-level steps by start time then by first arrival."""
    problems = []
    ids = [s["id"] for s in steps]
    if len(ids) != len(set(ids)):
        problems.append(f"a step is listed twice: {ids}")
    position = {sid: n for n, sid in enumerate(ids)}
    parent_of = {s["id"]: s.get("parentId") for s in steps}

    def in_cycle(sid: str) -> bool:
        """Whether the step's chain of parents loops (corrupt data, which Chainlit never
        writes: the order of such steps is left to the layer, as long as each is listed
        once)."""
        seen, current = {sid}, parent_of.get(sid)
        while current in parent_of:
            if current in seen:
                return True
            seen.add(current)
            current = parent_of.get(current)
        return False

    for step in steps:
        parent = step.get("parentId")
        if (
            parent in position
            and position[parent] > position[step["id"]]
            and not in_cycle(step["id"])
        ):
            problems.append(f"child {step['id']} comes before its parent {parent}")
    roots = [
        s
        for s in steps
        if (s.get("parentId") not in position) and isinstance(s.get("createdAt"), str)
    ]
    keys = [(s["createdAt"], arrival.get(s["id"], 0)) for s in roots]
    if keys != sorted(keys):
        problems.append(f"top-level steps are not in time order: {[s['id'] for s in roots]}")
    return problems


# -- the crash workload ---------------------------------------------------------------------


def load_workload() -> ModuleType:
    """``benchmarks/workload.py``: the Chainlit-shaped workload the benchmark drives
    (importable because the repository is on the tests' path: ``pythonpath`` in
    pyproject.toml, ``PYTHONPATH`` in a child's environment)."""
    from benchmarks import workload

    return workload


@dataclass
class Op:
    """One awaited data-layer call of the crash workload."""

    seq: int
    method: str
    thread_id: str | None
    payload: dict[str, Any]

    def describe(self) -> str:
        ident = self.payload.get("id") or self.payload.get("name") or ""
        return f"#{self.seq} {self.method} thread={self.thread_id} {str(ident)[:60]}"


CRASH_USERS = ("alice@example.com", "bob@example.com", "chloé@example.com")


def crash_ops(seed_value: int, threads: int = 5, turns_per_thread: int = 40) -> Iterator[Op]:
    """An endless, seeded stream of chat turns spread over ``threads`` threads (so a
    writer restarted after a kill keeps appending to the same journals; a thread that
    reached ``turns_per_thread`` turns makes way for a new one, so that hundreds of kills
    do not make every check read ever longer journals): the turns of
    ``benchmarks/workload.py`` (user message, run, tool created then updated, assistant
    message created empty then updated with its text, run updated, feedback on some
    turns), plus ``update_thread`` for name, user and metadata, and elements with bytes."""
    workload = load_workload()
    rng = random.Random(seed_value)
    clock = workload.Clock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    text = workload.TextMaker(rng)
    thread_ids = [workload.new_id(rng) for _ in range(threads)]
    topics = {tid: rng.choice(workload.TOPICS) for tid in thread_ids}
    owners = {tid: CRASH_USERS[n % len(CRASH_USERS)] for n, tid in enumerate(thread_ids)}
    named: set[str] = set()
    seq = 0

    def op(method: str, thread_id: str | None, payload: dict[str, Any]) -> Op:
        nonlocal seq
        seq += 1
        return Op(seq - 1, method, thread_id, payload)

    turns: dict[str, int] = {}
    while True:
        tid = rng.choice(thread_ids)
        turns[tid] = turns.get(tid, 0) + 1
        if turns[tid] > turns_per_thread:
            retired = thread_ids.index(tid)
            tid = thread_ids[retired] = workload.new_id(rng)
            topics[tid] = rng.choice(workload.TOPICS)
            owners[tid] = CRASH_USERS[rng.randrange(len(CRASH_USERS))]
            turns[tid] = 1
        topic, keywords = topics[tid]
        question = text.question(topic, keywords) if tid not in named else text.follow_up(keywords)
        if tid not in named or rng.random() < 0.08:
            named.add(tid)
            yield op(
                "update_thread",
                tid,
                {"name": question[:120], "user": owners[tid], "tags": rng.choice([None, ["t"]])},
            )
        feedback = rng.choice([None, None, 0, 1])
        calls = workload.turn_calls(rng, clock, text, tid, question, keywords, feedback=feedback)
        answer_id = None
        # Now and then a huge answer: a kill that lands while the kernel copies its
        # megabytes into the journal leaves a torn line (a small write is never torn).
        huge = rng.random() < 0.05
        for call in calls:
            payload = dict(call.args[0])
            if call.method == "upsert_feedback":
                yield op("upsert_feedback", tid, payload)
                continue
            if payload.get("type") == "assistant_message":
                answer_id = payload["id"]
                if huge and payload.get("output"):
                    filler = " ".join(rng.choice(keywords) for _ in range(100))
                    payload["output"] += "\n\n" + filler * rng.randrange(150, 600)
            yield op(call.method, tid, payload)
        if answer_id is not None and rng.random() < 0.35:
            size = rng.choice([1, 100, 5000, 70000])  # Chainlit refuses empty content
            name = rng.choice(["chart.png", "notes.txt", "report.pdf", "data.bin"])
            yield op(
                "create_element",
                tid,
                {
                    "id": workload.new_id(rng),
                    "threadId": tid,
                    "forId": answer_id,
                    "name": name,
                    "type": "image" if name.endswith(".png") else "file",
                    "content": rng.randbytes(size),
                },
            )
        if rng.random() < 0.12:
            metadata: dict[str, Any] = {
                "chat_profile": rng.choice(["default", "research"]),
                f"k{rng.randrange(4)}": rng.choice([None, rng.randrange(1000), "v"]),
            }
            yield op("update_thread", tid, {"metadata": metadata})
        clock.advance(rng.uniform(1.0, 60.0))


def apply_op(api: StoreAPI, op: Op, user_ids: dict[str, str]) -> None:
    """Make the call of ``op`` on ``api`` (awaited, for the layer)."""
    p = op.payload
    if op.method == "update_thread":
        kwargs = {k: v for k, v in p.items() if k != "user"}
        if "user" in p:
            kwargs["user_id"] = user_ids[p["user"]]
        api.update_thread(op.thread_id or "", **kwargs)
    elif op.method in ("create_step", "update_step"):
        getattr(api, op.method)(p)
    elif op.method == "upsert_feedback":
        api.upsert_feedback(p["forId"], p["value"], p.get("comment"), p["id"], p.get("threadId"))
    elif op.method == "create_element":
        api.create_element(p)
    else:  # pragma: no cover - the stream makes no other call
        raise AssertionError(op.method)


def model_apply(model: ContractModel, op: Op, user_ids: dict[str, str]) -> None:
    p = op.payload
    if op.method == "update_thread":
        kwargs = {k: v for k, v in p.items() if k != "user"}
        if "user" in p:
            kwargs["user_id"] = user_ids[p["user"]]
        model.update_thread(op.thread_id or "", **kwargs)
    elif op.method in ("create_step", "update_step"):
        model.write_step(p)
    elif op.method == "upsert_feedback":
        model.upsert_feedback(p["threadId"], p["id"], p["forId"], p["value"], p.get("comment"))
    elif op.method == "create_element":
        model.create_element(p)


# -- the writer that gets killed ---------------------------------------------------------------


def _write_line(text: str) -> None:
    # One write() of less than PIPE_BUF bytes: atomic on a pipe, so a kill never tears it.
    os.write(1, (text + "\n").encode())


def run_writer(root: str, seed_value: int, start: int, stop: int, backend: str, life: int) -> None:
    """Replay the crash workload from op ``start`` (the first one not acknowledged), in
    the fsync durability mode, reporting each acknowledged call on stdout."""
    _write_line(f"start {os.getpid()}")
    api = open_api(Path(root), backend, durability="fsync")
    user_ids = {}
    for identifier in CRASH_USERS:
        # A login on every start: rewrites the user file, which a kill may interrupt.
        user = api.create_user(identifier, metadata={"provider": "crash", "life": life})
        user_ids[identifier] = user["id"]
    _write_line("users " + json.dumps(user_ids))
    for op in crash_ops(seed_value):
        if op.seq < start:
            continue
        if op.seq >= stop:
            break
        apply_op(api, op, user_ids)
        _write_line(f"ack {op.seq}")
    api.close()
    _write_line("done")


def zygote(backend: str) -> None:
    """A fork server: imports everything once, then forks one writer per request, so
    hundreds of kills do not pay Chainlit's import each time. Requests on stdin:
    ``run ROOT SEED START STOP LIFE``; a writer's lines and then ``exit PID STATUS`` on
    stdout."""
    if backend == "layer":
        import chainlit.context
        import chainlit.element
        import chainlit.types
        import chainlit.user  # noqa: F401

        import filelayer.chainlit.datalayer
    import filelayer  # noqa: F401

    load_workload()
    _write_line("ready")
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        _, root, seed_value, start, stop, life = parts
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_writer(root, int(seed_value), int(start), int(stop), backend, int(life))
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 3
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        _write_line(f"exit {pid} {status}")


class Zygote:
    """The parent's handle on a :func:`zygote` process, with a reader thread so that
    every wait has a timeout (a hung writer fails the test instead of hanging it)."""

    def __init__(self, backend: str, cwd: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "zygote", backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,
            env=subprocess_env(same_mode=True),
        )
        self.lines: Queue[str | None] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect(lambda line: line == "ready", timeout=300)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except Empty:
            raise AssertionError(f"no word from the writer in {timeout}s{self.stderr()}") from None
        if line is None:
            raise AssertionError(f"the fork server died{self.stderr()}")
        return line

    def expect(self, match: Any, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if match(line):
                return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        return f"\nwriter stderr:\n{text[-4000:]}" if text.strip() else ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("quit")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


# -- the multi-process writer and the maintenance loop --------------------------------------


def proc_writer(root: str, worker: int, seed_value: int, turns: int, ack_path: str) -> None:
    """One of several processes writing one root at once (see
    test_reliability_processes.py); every call that returned is appended to ``ack_path``
    as a JSON line, so the parent knows what was acknowledged."""
    from filelayer import ArchiveStore

    rng = random.Random(seed_value * 1000 + worker)
    store = ArchiveStore(root)
    ack_fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def ack(**record: Any) -> None:
        os.write(ack_fd, (json.dumps(record, sort_keys=True) + "\n").encode())

    me = store.upsert_user(f"worker{worker}@example.com", {"worker": worker})
    ack(op="user", identifier=f"worker{worker}@example.com", id=me["id"])
    shared = ["shared-0", "shared-1"]
    own = [f"own-{worker}-{n}" for n in range(2)]
    for n in range(turns):
        thread = rng.choice(shared + own)
        t = f"2026-02-01T00:{n // 60 % 60:02d}:{n % 60:02d}.{worker:06d}Z"
        uid, aid = f"u-{worker}-{n}", f"a-{worker}-{n}"
        question = f"question {worker}/{n} {rng.choice(['oven', 'flour', 'salt'])}"
        store.write_step(
            {
                "id": uid,
                "threadId": thread,
                "type": "user_message",
                "output": question,
                "createdAt": t,
            }
        )
        ack(op="step", thread=thread, id=uid, output=question)
        store.write_step(
            {
                "id": aid,
                "threadId": thread,
                "type": "assistant_message",
                "output": "",
                "createdAt": t,
            }
        )
        answer = f"answer {worker}/{n} " + "x" * rng.randrange(0, 300)
        store.write_step({"id": aid, "threadId": thread, "output": answer})
        ack(op="step", thread=thread, id=aid, output=answer)
        if rng.random() < 0.3:
            value = rng.randrange(2)
            store.upsert_feedback(
                for_id=aid, value=value, thread_id=thread, feedback_id=f"f-{worker}-{n}"
            )
            ack(op="feedback", thread=thread, step=aid, id=f"f-{worker}-{n}", value=value)
        if thread in own and rng.random() < 0.3:
            name = f"renamed {worker}/{n}"
            store.update_thread(thread, name=name, user_id=me["id"])
            ack(op="name", thread=thread, name=name, user=me["id"])
        if thread in shared and rng.random() < 0.3:
            key = f"w{worker}n{n}"
            store.update_thread(thread, name=f"shared by {worker}/{n}", metadata={key: n})
            ack(op="meta", thread=thread, key=key, value=n, name=f"shared by {worker}/{n}")
        if rng.random() < 0.15:
            doomed = f"doomed-{worker}-{n}"
            store.update_thread(doomed, name="soon gone", user_id=me["id"])
            store.write_step(
                {"id": f"d-{worker}-{n}", "threadId": doomed, "type": "user_message", "output": "x"}
            )
            store.delete_thread(doomed)
            # Chainlit's late update on disconnect, and a late step: no resurrection.
            store.update_thread(doomed, name="ghost", metadata={"late": True})
            store.write_step(
                {"id": f"g-{worker}-{n}", "threadId": doomed, "type": "run", "output": "late"}
            )
            ack(op="deleted", thread=doomed)
    os.close(ack_fd)


def maintainer(root: str, stop_path: str, report_path: str, min_rounds: int) -> None:
    """Run ``filelayer compact`` and ``filelayer reindex`` (the CLI) over and over while
    the writers write, until ``stop_path`` exists (and at least ``min_rounds`` times).

    The stop is checked before each command, so the last ones ran while the writers were
    still writing: what they did to the index is what the test then checks."""
    rounds = {"compact": 0, "reindex": 0}
    failures = []
    while True:
        for command in ("compact", "reindex"):
            if os.path.exists(stop_path) and min(rounds.values()) >= min_rounds:
                Path(report_path).write_text(json.dumps({"rounds": rounds, "failures": failures}))
                return
            done = subprocess.run(
                [sys.executable, "-m", "filelayer", "--root", root, command],
                capture_output=True,
                text=True,
                env=subprocess_env(same_mode=True),
            )
            rounds[command] += 1
            if done.returncode != 0:
                failures.append(f"{command} exited {done.returncode}: {done.stderr[-2000:]}")


# -- file-system helpers -------------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``directory`` with its size and mtime (to see what changed)."""
    found = {}
    for path in sorted(directory.rglob("*")):
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            found[str(path.relative_to(directory))] = (st.st_size, st.st_mtime_ns)
    return found


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (needs root); always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise OSError(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:  # a file still open somewhere: detach it now, freed when closed
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, option: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{option}", str(path)], check=True)


def can_mount(scratch: Path) -> bool:
    """Whether this process may mount a tmpfs (root in a privileged enough sandbox)."""
    if os.name != "posix" or os.geteuid() != 0:
        return False
    try:
        with tmpfs(scratch / "probe", "64k"):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "zygote":
        zygote(argv[1])
    elif command == "proc-writer":
        root, worker, seed_value, turns, ack_path = argv[1:]
        proc_writer(root, int(worker), int(seed_value), int(turns), ack_path)
    elif command == "maintainer":
        root, stop_path, report_path, min_rounds = argv[1:]
        maintainer(root, stop_path, report_path, int(min_rounds))
    else:  # pragma: no cover
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
