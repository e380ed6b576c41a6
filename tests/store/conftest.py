"""The ``driver`` fixture: every contract test of this folder runs on the store and
through the data layer (``tests/support/drivers.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.drivers import Driver, LayerDriver, StoreDriver


@pytest.fixture(params=["store", "layer"])
async def driver(request: pytest.FixtureRequest, root: Path, in_tmp: Path) -> AsyncIterator[Driver]:
    """``ArchiveStore`` directly, then ``FileDataLayer`` (skipped without Chainlit) inside an
    HTTP-like Chainlit context, where its queued methods run at once."""
    made: Driver
    if request.param == "layer":
        pytest.importorskip("chainlit")
        from chainlit.context import init_http_context

        init_http_context()
        made = LayerDriver(root)
    else:
        made = StoreDriver(root)
    yield made
    await made.close()


@pytest.fixture
async def alice(driver: Driver) -> dict[str, Any]:
    """A user, as a login makes it."""
    return await driver.create_user("alice@example.com")
