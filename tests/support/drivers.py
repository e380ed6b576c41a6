"""Two ways to drive the data-layer contract, for the suites in ``tests/store/``.

The contract (what a thread, a step, a user, a feedback, an element is; how writes merge;
what the sidebar lists) is kept by ``ArchiveStore`` and handed on, unchanged, by
``FileDataLayer``. Each test of ``tests/store/test_contract_*.py`` runs on both through
the ``driver`` fixture: ``StoreDriver`` calls the store directly, ``LayerDriver`` makes the
same call the way Chainlit makes it (its ``User``, ``Feedback``, ``Element`` and
``Pagination`` types, in an HTTP-like context). Both take and give plain dicts, so a test
reads the same for both, and a difference between them is a bug in the adapter.

Only the store driver works without Chainlit (the ``nodeps`` stage runs that half).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from filelayer import ArchiveStore


@dataclass
class Page:
    """One page of ``list_threads``: the threads (without steps) and where the next begins."""

    threads: list[dict[str, Any]]
    has_next: bool
    end_cursor: str | None

    @property
    def ids(self) -> list[str]:
        return [t["id"] for t in self.threads]


def element_url(thread_id: str, element_id: str) -> str:
    """The URL the store driver gives a stored element (the adapter's comes from its route)."""
    return f"/elements/{thread_id}/{element_id}"


class Driver:
    """What every driver offers; the docstrings say the contract each call keeps."""

    kind: str
    root: Path
    others: list[Driver]
    store: ArchiveStore
    """The store underneath (the layer's own): for what no data-layer call does, such as
    waiting for the index to heal or putting a manifest as an import writes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.others = []

    # -- users ---------------------------------------------------------------------

    async def create_user(
        self,
        identifier: str,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """Create or update a user: ``{"id", "identifier", "metadata", "createdAt",
        "displayName"}``; the id never changes."""
        raise NotImplementedError

    async def get_user(self, identifier: str) -> dict[str, Any] | None:
        raise NotImplementedError

    # -- threads -------------------------------------------------------------------

    async def update_thread(
        self,
        thread_id: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        raise NotImplementedError

    async def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def thread_author(self, thread_id: str) -> str:
        raise NotImplementedError

    async def delete_thread(self, thread_id: str) -> None:
        raise NotImplementedError

    async def list_threads(
        self,
        user_id: str | None,
        first: int = 100,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        raise NotImplementedError

    # -- steps ---------------------------------------------------------------------

    async def create_step(self, step: dict[str, Any]) -> None:
        raise NotImplementedError

    async def update_step(self, step: dict[str, Any]) -> None:
        raise NotImplementedError

    async def delete_step(self, step_id: str) -> None:
        """By id alone: the thread is found (Chainlit's ``delete_step`` gives no thread)."""
        raise NotImplementedError

    async def set_favorite(self, step: dict[str, Any], favorite: bool) -> dict[str, Any]:
        """Chainlit's ``set_step_favorite``: the step sent again with
        ``metadata.favorite``."""
        raise NotImplementedError

    async def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- feedback ------------------------------------------------------------------

    async def upsert_feedback(
        self,
        for_id: str,
        value: int,
        *,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
    ) -> str:
        raise NotImplementedError

    async def delete_feedback(self, feedback_id: str) -> bool:
        raise NotImplementedError

    # -- elements ------------------------------------------------------------------

    async def create_element(
        self,
        element_id: str,
        thread_id: str,
        for_id: str | None,
        name: str,
        *,
        type: str = "file",
        content: bytes | str | None = None,
        path: Path | None = None,
        url: str | None = None,
        mime: str | None = None,
        **fields: Any,
    ) -> None:
        """Store an element: its bytes (``content``, or the file at ``path``, read at
        once) or only its ``url``; ``fields`` are the other ElementDict fields
        (``display``, ``size``, ``page``, ``props``)."""
        raise NotImplementedError

    async def get_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        raise NotImplementedError

    # -- workers -------------------------------------------------------------------

    def another_worker(self) -> Driver:
        """A second process's view of the same root (a fresh store or layer: no cache,
        no memory of which thread holds what), closed with this one."""
        other = type(self)(self.root)
        self.others.append(other)
        return other

    async def close(self) -> None:
        """Close this driver and every other worker it opened."""
        for other in self.others:
            await other.close()
        await self._close()

    async def _close(self) -> None:
        raise NotImplementedError


class StoreDriver(Driver):
    """The contract kept by ``ArchiveStore`` itself, called as a script would call it."""

    kind = "store"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.store = ArchiveStore(root)

    async def create_user(
        self,
        identifier: str,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        doc = self.store.upsert_user(identifier, metadata=metadata, display_name=display_name)
        return _user(doc)

    async def get_user(self, identifier: str) -> dict[str, Any] | None:
        doc = self.store.get_user(identifier)
        return _user(doc) if doc else None

    async def update_thread(
        self,
        thread_id: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        self.store.update_thread(
            thread_id, name=name, user_id=user_id, metadata=metadata, tags=tags
        )

    async def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        return self.store.get_thread(thread_id, element_url)

    async def thread_author(self, thread_id: str) -> str:
        return self.store.thread_author(thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        self.store.delete_thread(thread_id)

    async def list_threads(
        self,
        user_id: str | None,
        first: int = 100,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        threads, page = self.store.list_threads(
            user_id=user_id, first=first, cursor=cursor, search=search, feedback=feedback
        )
        return Page(threads, page.has_next, page.end_cursor)

    async def create_step(self, step: dict[str, Any]) -> None:
        self.store.write_step(dict(step))

    async def update_step(self, step: dict[str, Any]) -> None:
        self.store.write_step(dict(step))

    async def delete_step(self, step_id: str) -> None:
        self.store.delete_step(step_id)

    async def set_favorite(self, step: dict[str, Any], favorite: bool) -> dict[str, Any]:
        step["metadata"] = {**(step.get("metadata") or {}), "favorite": favorite}
        await self.update_step(step)
        return step

    async def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        return self.store.favorite_steps(user_id)

    async def upsert_feedback(
        self,
        for_id: str,
        value: int,
        *,
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

    async def delete_feedback(self, feedback_id: str) -> bool:
        return self.store.delete_feedback(feedback_id)

    async def create_element(
        self,
        element_id: str,
        thread_id: str,
        for_id: str | None,
        name: str,
        *,
        type: str = "file",
        content: bytes | str | None = None,
        path: Path | None = None,
        url: str | None = None,
        mime: str | None = None,
        **fields: Any,
    ) -> None:
        record = {
            "id": element_id,
            "type": type,
            "name": name,
            "forId": for_id,
            "mime": mime,
            "url": url,
            **fields,
        }
        if type == "custom":
            record.setdefault("props", {})
        data = content.encode("utf-8") if isinstance(content, str) else content
        if data is None and path is not None:
            data = path.read_bytes()
        self.store.put_element(thread_id, record, data)

    async def get_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        return self.store.get_element(thread_id, element_id, element_url)

    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        self.store.delete_element(element_id, thread_id)

    async def _close(self) -> None:
        self.store.close()


class LayerDriver(Driver):
    """The same contract through ``FileDataLayer``, called with Chainlit's own types."""

    kind = "layer"

    def __init__(self, root: Path) -> None:
        from filelayer import FileDataLayer

        super().__init__(root)
        self.layer = FileDataLayer(root)
        self.store = self.layer.store

    async def create_user(
        self,
        identifier: str,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        from chainlit.user import PersistedUser, User

        user = User(identifier=identifier, metadata=metadata or {}, display_name=display_name)
        created = await self.layer.create_user(user)
        assert isinstance(created, PersistedUser)
        return _persisted(created)

    async def get_user(self, identifier: str) -> dict[str, Any] | None:
        got = await self.layer.get_user(identifier)
        return _persisted(got) if got is not None else None

    async def update_thread(
        self,
        thread_id: str,
        *,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        await self.layer.update_thread(
            thread_id, name=name, user_id=user_id, metadata=metadata, tags=tags
        )

    async def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        return await self.layer.get_thread(thread_id)  # type: ignore[return-value]

    async def thread_author(self, thread_id: str) -> str:
        return await self.layer.get_thread_author(thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        await self.layer.delete_thread(thread_id)

    async def list_threads(
        self,
        user_id: str | None,
        first: int = 100,
        cursor: str | None = None,
        search: str | None = None,
        feedback: int | None = None,
    ) -> Page:
        from chainlit.types import Pagination, ThreadFilter

        page = await self.layer.list_threads(
            Pagination(first=first, cursor=cursor),
            ThreadFilter(userId=user_id, search=search, feedback=feedback),  # type: ignore[arg-type]
        )
        return Page(list(page.data), page.pageInfo.hasNextPage, page.pageInfo.endCursor)  # type: ignore[arg-type]

    async def create_step(self, step: dict[str, Any]) -> None:
        await self.layer.create_step(dict(step))  # type: ignore[arg-type]

    async def update_step(self, step: dict[str, Any]) -> None:
        await self.layer.update_step(dict(step))  # type: ignore[arg-type]

    async def delete_step(self, step_id: str) -> None:
        await self.layer.delete_step(step_id)

    async def set_favorite(self, step: dict[str, Any], favorite: bool) -> dict[str, Any]:
        from chainlit.data.base import BaseDataLayer

        if not hasattr(BaseDataLayer, "set_step_favorite"):
            pytest.skip("this Chainlit's BaseDataLayer has no set_step_favorite (it came later)")
        return await self.layer.set_step_favorite(step, favorite)  # type: ignore[arg-type,return-value]

    async def favorite_steps(self, user_id: str) -> list[dict[str, Any]]:
        return await self.layer.get_favorite_steps(user_id)  # type: ignore[return-value]

    async def upsert_feedback(
        self,
        for_id: str,
        value: int,
        *,
        comment: str | None = None,
        feedback_id: str | None = None,
        thread_id: str | None = None,
    ) -> str:
        from chainlit.types import Feedback

        return await self.layer.upsert_feedback(
            Feedback(
                forId=for_id,
                value=value,  # type: ignore[arg-type]
                comment=comment,
                id=feedback_id,
                threadId=thread_id,
            )
        )

    async def delete_feedback(self, feedback_id: str) -> bool:
        return await self.layer.delete_feedback(feedback_id)

    async def create_element(
        self,
        element_id: str,
        thread_id: str,
        for_id: str | None,
        name: str,
        *,
        type: str = "file",
        content: bytes | str | None = None,
        path: Path | None = None,
        url: str | None = None,
        mime: str | None = None,
        **fields: Any,
    ) -> None:
        from chainlit import element as elements

        kinds = {
            "image": elements.Image,
            "file": elements.File,
            "text": elements.Text,
            "pdf": elements.Pdf,
            "custom": elements.CustomElement,
        }
        given: dict[str, Any] = {"content": content, "path": str(path) if path else None}
        given["url"] = url
        element = kinds[type](
            id=element_id,
            name=name,
            for_id=for_id,
            thread_id=thread_id,
            **{k: v for k, v in given.items() if v is not None},
            **fields,
        )
        if mime is not None:
            element.mime = mime
        await self.layer.create_element(element)

    async def get_element(self, thread_id: str, element_id: str) -> dict[str, Any] | None:
        return await self.layer.get_element(thread_id, element_id)  # type: ignore[return-value]

    async def delete_element(self, element_id: str, thread_id: str | None = None) -> None:
        await self.layer.delete_element(element_id, thread_id)

    async def _close(self) -> None:
        await self.layer.close()


def _user(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "identifier": doc["identifier"],
        "metadata": doc.get("metadata") or {},
        "createdAt": doc["createdAt"],
        "displayName": doc.get("displayName"),
    }


def _persisted(user: Any) -> dict[str, Any]:
    return {
        "id": user.id,
        "identifier": user.identifier,
        "metadata": user.metadata,
        "createdAt": user.createdAt,
        "displayName": user.display_name,
    }
