"""A real browser on the example app: resumed threads look exactly like live ones, and
the sidebar shows recent activity first.

Debian's headless Chromium, driven by Playwright, against `chainlit run examples/app.py`
on a temporary root. Screenshots of the key screens go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chainlit")
playwright_api = pytest.importorskip("playwright.sync_api")

from filelayer import ArchiveStore  # noqa: E402
from filelayer.store import now_iso  # noqa: E402
from tests.support.apps import App, chainlit_running  # noqa: E402
from tests.support.processes import REPO, subprocess_env  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT = 60_000  # ms: a bound for a stuck page on a loaded machine

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing: install Debian's chromium package", pytrace=False)
    pytest.skip("Chromium is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, app: App, user: str) -> None:
    frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))),
    )
    page.goto(app.url)
    page.wait_for_selector("#email", timeout=TIMEOUT)
    page.fill("#email", user)
    page.fill("#password", user)
    page.press("#password", "Enter")
    page.wait_for_selector("#chat-input", timeout=TIMEOUT)
    # Chainlit answers the client's "connection_successful" with task_end once its
    # session exists; an upload before that fails with "Session not found".
    for _ in range(TIMEOUT // 100):
        if any(frame.startswith('42["task_end"') for frame in frames):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the websocket never connected: {frames[:5]}")


def send(page: Any, text: str) -> None:
    page.wait_for_selector("#chat-input:not([disabled])", timeout=TIMEOUT)
    page.fill("#chat-input", text)
    page.click("#chat-submit")


def images_decoded(page: Any) -> list[int]:
    return page.eval_on_selector_all(
        "img[src*='/filelayer/elements/'], img[src*='/project/file/']",
        "els => els.map(e => e.complete ? e.naturalWidth : 0)",
    )


def wait_images(page: Any, count: int) -> None:
    page.wait_for_function(
        r"""n => {
            const imgs = [...document.querySelectorAll("img")]
              .filter(e => /\/filelayer\/elements\/|\/project\/file\//.test(e.src));
            return imgs.length >= n && imgs.every(e => e.complete && e.naturalWidth > 0);
        }""",
        arg=count,
        timeout=TIMEOUT,
    )


def open_thread_menu(page: Any, thread_id: str) -> None:
    item = page.locator(f"#thread-{thread_id}")
    item.hover()
    item.locator("#thread-options").click()


def manifest(app: App, thread_id: str) -> dict[str, Any]:
    path = app.root / "threads" / thread_id / "thread.json"
    return json.loads(path.read_text("utf-8")) if path.exists() else {}


def test_chat_resume_rename_search_share_delete(
    browser: Any, example_app: App, tmp_path: Path
) -> None:
    app = example_app
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        journey(browser, app, page, tmp_path)
    except Exception:
        shot(page, "failure")
        raise
    finally:
        context.close()


def journey(browser: Any, app: App, page: Any, tmp_path: Path) -> None:
    log_in(page, app, "admin")

    # Chat, with a file attached from the composer.
    upload = tmp_path / "shopping-list.txt"
    upload.write_text("flour\nwater\nsalt\n")
    page.set_input_files("#upload-button-input", str(upload))
    page.wait_for_selector("#attachments >> text=shopping-list.txt")
    send(page, "show me everything")
    page.wait_for_url("**/thread/**")
    answer = page.locator("[data-step-type='assistant_message']", has_text="Turn 1")
    answer.wait_for()
    page.wait_for_selector("text=search_notes")
    wait_images(page, 1)
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_selector("#custom-counter")
    thread_id = page.url.rstrip("/").split("/")[-1]
    shot(page, "1-live-answer")

    # Thumbs up with a comment, on the answer.
    page.locator(".positive-feedback-off").last.click()
    page.locator("textarea").last.fill("Exactly what I needed")
    page.click("#submit-feedback")
    page.wait_for_selector(".positive-feedback-on")

    # Reload: the thread is in the sidebar under its name; open it.
    page.reload()
    page.wait_for_selector(f"#thread-{thread_id}")
    assert "show me everything" in page.inner_text(f"#thread-{thread_id}")
    page.goto(app.url)
    page.wait_for_selector(f"#thread-{thread_id}")
    page.click(f"#thread-{thread_id}")
    page.wait_for_url(f"**/thread/{thread_id}")
    page.locator("[data-step-type='assistant_message']", has_text="Turn 1").wait_for()
    page.wait_for_selector("text=show me everything")
    page.wait_for_selector("text=search_notes")
    page.wait_for_selector("text=shopping-list.txt")
    wait_images(page, 1)
    assert all(width > 0 for width in images_decoded(page))
    page.wait_for_selector(".js-plotly-plot")
    page.wait_for_selector("table")
    page.wait_for_selector("#custom-counter")
    page.wait_for_selector(".positive-feedback-on")
    shot(page, "2-resumed-thread")
    if os.environ.get("FILELAYER_UPDATE_SCREENSHOT") == "1":  # the README's picture
        page.screenshot(path=str(REPO / "docs" / "screenshots" / "resumed-thread.png"))

    # Continue the conversation in the resumed thread.
    send(page, "and one more thing")
    page.locator("[data-step-type='assistant_message']", has_text="Turn 2").wait_for()

    # Rename it from the sidebar.
    open_thread_menu(page, thread_id)
    page.click("#rename-thread")
    page.fill("#name", "Bread plans")
    page.locator("[role='dialog'] button", has_text="Confirm").click()
    page.wait_for_selector(f"#thread-{thread_id} >> text=Bread plans")
    assert manifest(app, thread_id)["name"] == "Bread plans"

    # Search the sidebar.
    page.click("#search-chats-button")
    page.keyboard.type("bread plans")
    page.wait_for_selector("[cmdk-item] >> text=Bread plans")
    shot(page, "3-search")
    page.keyboard.press("Escape")

    # Share it, and open the link logged out.
    open_thread_menu(page, thread_id)
    page.click("#share-thread")
    dialog = page.locator("[role='dialog']")
    dialog.locator("button", has_text="Share").first.click()
    for _ in range(50):  # the share request lands in the manifest
        if manifest(app, thread_id).get("metadata", {}).get("is_shared"):
            break
        page.wait_for_timeout(200)
    assert manifest(app, thread_id)["metadata"]["is_shared"] is True
    page.keyboard.press("Escape")
    # Another user, in a fresh browser: Chainlit's UI sends logged-out visitors of an
    # app that requires login to its login page first.
    visitor = browser.new_context(viewport={"width": 1280, "height": 900})
    shared = visitor.new_page()
    shared.set_default_timeout(TIMEOUT)
    log_in(shared, app, "guest")
    shared.goto(f"{app.url}/share/{thread_id}")
    shared.locator("text=Turn 1").first.wait_for()
    wait_images(shared, 1)
    shot(shared, "4-shared-with-another-user")
    visitor.close()

    # Delete it: gone from the sidebar and from the disk.
    open_thread_menu(page, thread_id)
    page.click("#delete-thread")
    page.click("[role='alertdialog'] button.bg-primary")
    page.wait_for_selector(f"#thread-{thread_id}", state="detached")
    for _ in range(50):
        if not (app.root / "threads" / thread_id).exists():
            break
        page.wait_for_timeout(200)
    assert not (app.root / "threads" / thread_id).exists()


# -- the sidebar: recent activity first -----------------------------------------------

HISTORY = 50
"""Old threads of one user: more than the 35 the sidebar loads at a time."""


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_message(store: ArchiveStore, thread_id: str, kind: str, text: str, at: str) -> None:
    store.write_step(
        {
            "id": str(uuid.uuid4()),
            "threadId": thread_id,
            "type": kind,
            "name": "guest" if kind == "user_message" else "Assistant",
            "output": text,
            "createdAt": at,
            "start": at,
            "end": at,
        }
    )


def write_history(root: Path) -> list[str]:
    """``guest``'s old conversations, newest first: thread ``n`` began ``n + 2`` days ago
    (a question and its answer), as an import or ``filelayer copy`` leaves them."""
    store = ArchiveStore(root)
    user = store.upsert_user("guest", metadata={"provider": "credentials"})
    now = datetime.now(timezone.utc)
    threads = []
    for n in range(HISTORY):
        thread_id = str(uuid.uuid4())
        began = now - timedelta(days=n + 2, hours=1)
        store.put_manifest(
            {
                "id": thread_id,
                "name": f"Old chat {n}",
                "userId": user["id"],
                "tags": None,
                "metadata": {},
                "createdAt": iso(began),
                "updatedAt": iso(began + timedelta(seconds=5)),
            }
        )
        asked, answered = began + timedelta(seconds=60), began + timedelta(seconds=90)
        write_message(store, thread_id, "user_message", f"Old question {n}", iso(asked))
        write_message(store, thread_id, "assistant_message", f"Old answer {n}", iso(answered))
        threads.append(thread_id)
    store.close()
    return threads


@pytest.fixture(scope="module")
def history_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, list[str]]]:
    """The example app on an archive written before it starts: ``guest``'s history."""
    work = tmp_path_factory.mktemp("history")
    shutil.copytree(REPO / "examples", work / "app", ignore=shutil.ignore_patterns("chats"))
    root = work / "chats"
    threads = write_history(root)
    log = work / "chainlit.log"
    env = subprocess_env(FILELAYER_ROOT=str(root), CHAINLIT_AUTH_SECRET="test-secret-" + "x" * 40)
    with chainlit_running(work / "app", env, log) as url:
        yield App(url=url, root=root, log=log), threads


SIDEBAR_ITEMS = "#thread-history li[id^='thread-']"


def sidebar(page: Any) -> list[tuple[str, list[str]]]:
    """The sidebar as drawn: each date group's label with its thread ids, in order."""
    groups = page.eval_on_selector_all(
        "#thread-history [data-sidebar='group-label']",
        """labels => labels.map(label => [
            label.innerText.trim(),
            [...label.parentElement.querySelectorAll("li[id^='thread-']")]
              .map(li => li.id.slice("thread-".length)),
        ])""",
    )
    return [(label, list(ids)) for label, ids in groups]


def shown_ids(page: Any) -> list[str]:
    return [tid for _, ids in sidebar(page) for tid in ids]


def wait_sidebar(page: Any, count: int) -> None:
    page.wait_for_function(
        "([selector, n]) => document.querySelectorAll(selector).length >= n",
        arg=[SIDEBAR_ITEMS, count],
        timeout=TIMEOUT,
    )


def scroll_whole_sidebar(page: Any, total: int) -> None:
    """Scroll the thread list down until every thread is loaded (35 at a time)."""
    for _ in range(TIMEOUT // 250):
        if page.locator(SIDEBAR_ITEMS).count() >= total:
            return
        page.eval_on_selector(
            "#thread-history",
            """list => {
                const box = list.closest("[data-sidebar='content']");
                box.scrollTop = box.scrollHeight;
            }""",
        )
        page.wait_for_timeout(250)
    raise AssertionError(f"the sidebar stopped at {page.locator(SIDEBAR_ITEMS).count()} threads")


def listed(app: App, user: str = "guest") -> list[tuple[str, str]]:
    """What list_threads answers, every page: (id, createdAt)."""
    store = ArchiveStore(app.root, create=False)
    try:
        owner = store.get_user(user)
        assert owner is not None
        threads, _ = store.list_threads(user_id=owner["id"], first=1000)
        return [(t["id"], t["createdAt"]) for t in threads]
    finally:
        store.close()


@pytest.fixture
def guest_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        yield page
    finally:
        context.close()


def test_an_old_thread_continued_today_is_at_the_top_of_the_sidebar(
    guest_page: Any, history_app: tuple[App, list[str]]
) -> None:
    app, threads = history_app
    page = guest_page
    oldest = threads[-1]
    try:
        log_in(page, app, "guest")
        wait_sidebar(page, 35)
        page.wait_for_timeout(500)  # nothing more arrives unless the list is scrolled
        assert len(shown_ids(page)) == 35
        assert oldest not in shown_ids(page)  # on the second page

        # The conversation goes on today (another process writes: the app sees it).
        store = ArchiveStore(app.root, create=False)
        write_message(store, oldest, "user_message", "Back to this one", now_iso())
        answered = now_iso()
        write_message(store, oldest, "assistant_message", "Welcome back", answered)
        store.close()

        page.reload()
        wait_sidebar(page, 35)
        groups = sidebar(page)
        assert groups[0] == ("Today", [oldest]), groups
        assert [label for label, _ in groups][1:3] == ["Previous 7 days", "Previous 30 days"]
        shot(page, "5-sidebar-recent-activity")

        # Scrolling loads the rest: each thread once, in the order of the pages, none of
        # a later page drawn above the threads already there.
        scroll_whole_sidebar(page, HISTORY)
        assert shown_ids(page) == [oldest, *threads[:-1]]
        assert [tid for tid, _ in listed(app)] == shown_ids(page)
        assert listed(app)[0] == (oldest, answered)
        created = json.loads((app.root / "threads" / oldest / "thread.json").read_text())
        assert created["createdAt"] < iso(datetime.now(timezone.utc) - timedelta(days=50))
    except Exception:
        shot(page, "failure-sidebar-activity")
        raise


def test_opening_an_old_thread_leaves_its_place_in_the_sidebar(
    guest_page: Any, history_app: tuple[App, list[str]]
) -> None:
    app, threads = history_app
    page = guest_page
    opened = threads[40]  # six weeks old: on the sidebar's second page
    try:
        log_in(page, app, "guest")
        wait_sidebar(page, 35)
        first_page = shown_ids(page)
        assert opened not in first_page
        scroll_whole_sidebar(page, HISTORY)
        before = sidebar(page)
        listed_before = listed(app)
        updated = manifest(app, opened)["updatedAt"]

        # Resume it, then leave: Chainlit saves the session into the thread as the
        # websocket closes (update_thread with metadata).
        page.click(f"#thread-{opened}")
        page.wait_for_url(f"**/thread/{opened}")
        page.locator("[data-step-type='assistant_message']", has_text="Old answer 40").wait_for()
        page.goto(app.url)
        for _ in range(TIMEOUT // 200):
            if manifest(app, opened)["updatedAt"] > updated:
                break
            page.wait_for_timeout(200)
        assert manifest(app, opened)["updatedAt"] > updated, "the session was never saved"
        assert manifest(app, opened)["metadata"], "the session was never saved"

        # Reload: the same first page, and the same sidebar once scrolled.
        page.reload()
        wait_sidebar(page, 35)
        page.wait_for_timeout(500)
        assert shown_ids(page) == first_page
        scroll_whole_sidebar(page, HISTORY)
        assert sidebar(page) == before
        assert listed(app) == listed_before
        shot(page, "6-sidebar-after-resume")
    except Exception:
        shot(page, "failure-sidebar-resume")
        raise
