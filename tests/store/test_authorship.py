"""Only a thread's author changes it: the storage core's half of the rule.

The store is handed an explicit ``actor`` (the logged-in user a call is made for; the
adapter finds it in Chainlit's session or the HTTP request) and refuses a write by an
actor to a thread another user wrote, changing nothing. ``actor=None`` is the app itself,
and a thread without an author (no login; Slack and Teams threads) stays writable by
everyone. Feedback never creates a thread and never rates a step that is not there.
Storage-core only: runs without Chainlit.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from filelayer import (
    ArchiveStore,
    InvalidIdError,
    InvalidValueError,
    NotAuthorError,
    UnknownStepError,
    UnknownUserError,
)
from filelayer.maintenance.verify import verify

ALICE, MALLORY = "alice", "mallory"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the archive but the locks and the derived index (a database that
    changes its own files as it pleases; it is compared through ``list_threads``), byte
    for byte."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and p.relative_to(root).parts[0] != "index"
    }


def step(
    thread: str, sid: str, kind: str = "assistant_message", text: str = "hi"
) -> dict[str, Any]:
    return {
        "id": sid,
        "threadId": thread,
        "type": kind,
        "output": text,
        "createdAt": "2026-01-01T00:00:01.000000Z",
    }


@pytest.fixture
def archive(store: ArchiveStore) -> ArchiveStore:
    """alice's thread ``ta`` (a message, an element file, a rating) and mallory's ``tm``."""
    for who, thread in ((ALICE, "ta"), (MALLORY, "tm")):
        user = store.upsert_user(who)
        store.update_thread(thread, name=f"{who}'s", user_id=user["id"], actor=who)
        store.write_step(step(thread, f"{thread}-s1"), actor=who)
    store.put_element(
        "ta", {"id": "ea", "type": "image", "name": "a.png", "forId": "ta-s1"}, b"png", actor=ALICE
    )
    store.upsert_feedback(for_id="ta-s1", value=1, feedback_id="fa", thread_id="ta", actor=ALICE)
    store.update_thread("ta", metadata={"is_shared": True}, actor=ALICE)
    return store


ATTACKS: dict[str, Callable[[ArchiveStore, str | None], Any]] = {
    "write a step": lambda s, who: s.write_step(step("ta", "ta-s1", text="pwned"), actor=who),
    "add a step": lambda s, who: s.write_step(step("ta", "new"), actor=who),
    "delete a step": lambda s, who: s.delete_step("ta-s1", actor=who),
    "delete a step by thread": lambda s, who: s.delete_step("ta-s1", "ta", actor=who),
    "rename": lambda s, who: s.update_thread("ta", name="pwned", actor=who),
    "unshare": lambda s, who: s.update_thread("ta", metadata={"is_shared": False}, actor=who),
    "take over": lambda s, who: s.update_thread(
        "ta", user_id=s.upsert_user(MALLORY)["id"], actor=who
    ),
    "delete the thread": lambda s, who: s.delete_thread("ta", actor=who),
    "rate": lambda s, who: s.upsert_feedback(for_id="ta-s1", value=0, thread_id="ta", actor=who),
    "rate without thread": lambda s, who: s.upsert_feedback(for_id="ta-s1", value=0, actor=who),
    "re-rate by id": lambda s, who: s.upsert_feedback(
        for_id="ta-s1", value=0, feedback_id="fa", actor=who
    ),
    "un-rate": lambda s, who: s.delete_feedback("fa", actor=who),
    "un-rate naming one's own thread": lambda s, who: s.delete_feedback(
        "fa", actor=who, thread_id="tm"
    ),
    "overwrite an element": lambda s, who: s.put_element(
        "ta", {"id": "ea", "type": "custom", "name": "a.json"}, b"{}", actor=who
    ),
    "record an element": lambda s, who: s.record_element(
        "ta", {"id": "ea", "type": "custom", "props": {}}, actor=who
    ),
    "delete an element": lambda s, who: s.delete_element("ea", "ta", actor=who),
    "delete an element by id": lambda s, who: s.delete_element("ea", actor=who),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_another_user_changes_nothing(archive: ArchiveStore, attack: str) -> None:
    before = snapshot(archive.root)
    alice = archive.get_user(ALICE)
    assert alice is not None
    listed = archive.list_threads(user_id=alice["id"])[0]
    with pytest.raises(NotAuthorError) as caught:
        ATTACKS[attack](archive, MALLORY)
    assert caught.value.thread_id == "ta" and caught.value.actor == MALLORY
    assert isinstance(caught.value, PermissionError)
    assert snapshot(archive.root) == before
    fresh = ArchiveStore(archive.root)
    assert fresh.list_threads(user_id=alice["id"])[0] == listed


@pytest.mark.parametrize("actor", [None, ALICE])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_the_app_and_the_author_may(archive: ArchiveStore, attack: str, actor: str | None) -> None:
    """The same calls made by the app itself (no actor) or by alice go through."""
    ATTACKS[attack](archive, actor)


def test_a_thread_without_author_is_everyones(store: ArchiveStore) -> None:
    """Apps without login, and Slack or Teams threads (Chainlit leaves them authorless
    so that many users write them), keep working as before."""
    store.write_step(step("open", "s1"), actor=None)
    store.write_step(step("open", "s2"), actor=ALICE)
    store.write_step(step("open", "s3"), actor=MALLORY)
    store.upsert_feedback(for_id="s1", value=1, thread_id="open", actor=MALLORY)
    store.delete_step("s2", actor=MALLORY)
    assert [s["id"] for s in store.get_thread("open")["steps"]] == ["s1", "s3"]  # type: ignore[index]


def test_an_author_the_archive_cannot_name_matches_nobody(store: ArchiveStore) -> None:
    """A manifest naming a user id that no user file holds (``update_thread`` refuses
    one, but a copy or a merge can bring one in) names an author nobody can prove to be."""
    store.put_manifest(
        {"id": "t", "userId": "no-such-user", "createdAt": "2026-01-01T00:00:00.000000Z"}
    )
    with pytest.raises(NotAuthorError):
        store.write_step(step("t", "s"), actor=ALICE)
    store.write_step(step("t", "s"))  # the app still may


def test_feedback_never_creates_a_thread(archive: ArchiveStore) -> None:
    before = snapshot(archive.root)
    for kwargs in (
        {"for_id": "ta-s1", "thread_id": "nothread"},
        {"for_id": "nostep", "thread_id": "ta"},
        {"for_id": "nostep"},
        {"for_id": "ta-s1", "thread_id": "nothread", "actor": MALLORY},
    ):
        with pytest.raises(UnknownStepError):
            archive.upsert_feedback(value=1, **kwargs)  # type: ignore[arg-type]
    assert snapshot(archive.root) == before
    assert not (archive.root / "threads" / "nothread").exists()


def test_feedback_for_a_deleted_step_is_refused(archive: ArchiveStore) -> None:
    archive.delete_step("ta-s1", actor=ALICE)
    before = snapshot(archive.root)
    with pytest.raises(UnknownStepError):
        archive.upsert_feedback(for_id="ta-s1", value=1, thread_id="ta", actor=ALICE)
    assert snapshot(archive.root) == before


def test_a_feedback_id_stays_with_its_thread(archive: ArchiveStore) -> None:
    """Mallory reusing alice's feedback id on her own step must not move alice's
    rating out of the index (the sidebar's feedback filter)."""
    with pytest.raises(InvalidIdError):
        archive.upsert_feedback(
            for_id="tm-s1", value=0, feedback_id="fa", thread_id="tm", actor=MALLORY
        )
    alice = archive.get_user(ALICE)
    assert alice is not None
    rated = archive.list_threads(user_id=alice["id"], feedback=1)[0]
    assert [t["id"] for t in rated] == ["ta"]


def test_a_repeated_step_id_is_deleted_in_the_callers_thread(archive: ArchiveStore) -> None:
    """Step ids are the client's: mallory's message may carry alice's step id. Reading
    alice's shared thread must not make mallory's delete land in it."""
    archive.write_step(step("tm", "ta-s1", kind="user_message"), actor=MALLORY)
    archive.get_thread("ta")  # what viewing the shared thread does
    assert archive.delete_step("ta-s1", prefer="tm", actor=MALLORY)
    assert [s["id"] for s in archive.get_thread("ta")["steps"]] == ["ta-s1"]  # type: ignore[index]
    assert [s["id"] for s in archive.get_thread("tm")["steps"]] == ["tm-s1"]  # type: ignore[index]


@pytest.mark.parametrize(
    "error",
    [
        NotAuthorError("t1", "mallory"),
        UnknownStepError("s1", "t1"),
        UnknownStepError("s", None),
    ],
)
def test_errors_survive_pickle(error: Exception) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert again.__dict__ == error.__dict__


def test_bad_values_are_refused_with_the_layers_own_error(archive: ArchiveStore) -> None:
    """A bad value a caller gives is the layer's own error (a ``ValueError`` still, for
    callers that catch that), naming what was wrong, and nothing is written."""
    from filelayer.maintenance.retention import select_old

    before = snapshot(archive.root)
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("value", lambda: archive.upsert_feedback(for_id="ta-s1", value=5, thread_id="ta")),
        ("comment", lambda: archive.upsert_feedback(for_id="ta-s1", value=1, comment=3)),
        ("name", lambda: archive.update_thread("ta", name=7)),  # type: ignore[arg-type]
        ("tags", lambda: archive.update_thread("ta", tags="x")),  # type: ignore[arg-type]
        ("data", lambda: archive.update_thread("ta", metadata={"x": float("nan")})),
        ("data", lambda: archive.write_step(step("ta", "s9", text="\ud800"))),
        ("before", lambda: select_old(archive, "2025-13-01")),
    ]
    for what, attempt in attempts:
        with pytest.raises(InvalidValueError) as caught:
            attempt()
        assert caught.value.what == what, caught.value
    assert snapshot(archive.root) == before


@pytest.mark.parametrize("damage", ["emptied", "garbage", "removed"])
def test_a_manifest_that_cannot_be_read_opens_the_thread_to_nobody(
    archive: ArchiveStore, damage: str
) -> None:
    """An emptied ``thread.json`` (a power cut in the ``flush`` mode can leave one), a
    damaged one, or none beside a journal: nobody can prove to be the author, so no
    logged-in caller may write; it used to read as a thread without author, which
    everyone may write (and delete)."""
    manifest = archive.layout.manifest("ta")
    if damage == "removed":
        manifest.unlink()
    else:
        manifest.write_bytes(b"" if damage == "emptied" else b"{not json")
    for who in (MALLORY, ALICE):
        before = snapshot(archive.root)
        fresh = ArchiveStore(archive.root)
        try:
            with pytest.raises(NotAuthorError):
                fresh.write_step(step("ta", "new"), actor=who)
            with pytest.raises(NotAuthorError):
                fresh.delete_thread("ta", actor=who)
        finally:
            fresh.close()
        assert snapshot(archive.root) == before
    archive.write_step(step("ta", "by-the-app"))  # the app itself still may


def test_a_manifest_emptied_by_a_power_cut_gets_its_author_back(archive: ArchiveStore) -> None:
    """The index still knows the thread's name and author: a reconcile that finds the
    manifest emptied keeps them (the thread stays in alice's sidebar, and nobody may
    write it), and ``verify --repair`` writes them into the new manifest."""
    alice = archive.get_user(ALICE)
    assert alice is not None
    archive.layout.manifest("ta").write_bytes(b"")
    fresh = ArchiveStore(archive.root)
    try:
        fresh.reconcile()
        listed = fresh.list_threads(user_id=alice["id"])[0]
        assert [(t["id"], t["name"]) for t in listed] == [("ta", "alice's")]
        report = verify(fresh, repair=True)
        assert any("the name and author the index held" in str(p) for p in report.problems)
        assert fresh.thread_author("ta") == ALICE
        fresh.write_step(step("ta", "again"), actor=ALICE)
        with pytest.raises(NotAuthorError):
            fresh.write_step(step("ta", "pwned"), actor=MALLORY)
    finally:
        fresh.close()


def tear(path: Path) -> bytes:
    """What a power cut may keep of a manifest renamed into place unsynced in the
    ``flush`` mode: a prefix that does not decode (its whole bytes are returned)."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return whole


def test_a_torn_manifest_is_set_aside_and_made_again(archive: ArchiveStore) -> None:
    """A torn manifest (not only an emptied one) is made again with the name and author
    the index held; it was reported as damaged, "restore from a backup", and the thread
    stayed nameless and nobody's. Its bytes are kept beside it."""
    path = archive.layout.manifest("ta")
    tear(path)
    torn = path.read_bytes()
    fresh = ArchiveStore(archive.root)
    try:
        report = verify(fresh, repair=True)
        assert not report.unrepaired, [str(p) for p in report.problems]
        assert any("the name and author the index held" in str(p) for p in report.problems)
        assert (path.parent / "thread.json.damaged").read_bytes() == torn
        assert fresh.thread_author("ta") == ALICE
        assert fresh.get_thread("ta")["name"] == "alice's"  # type: ignore[index]
        fresh.write_step(step("ta", "again"), actor=ALICE)
        with pytest.raises(NotAuthorError):
            fresh.write_step(step("ta", "pwned"), actor=MALLORY)
        assert not verify(fresh).problems
    finally:
        fresh.close()


@pytest.mark.parametrize("how", ["reindex", "verify"])
def test_a_rebuild_keeps_the_author_of_a_lost_manifest(archive: ArchiveStore, how: str) -> None:
    """The reconcile keeps a lost manifest's name and author in the index; a rebuild
    (``filelayer reindex``, or ``verify --repair``'s repair of a drift) read the thread
    from its files alone and dropped them: the thread left its author's sidebar, and a
    later ``verify --repair`` made it a manifest with no author, everyone's to write."""
    alice = archive.get_user(ALICE)
    assert alice is not None
    tear(archive.layout.manifest("ta"))
    (archive.root / "threads" / "tm" / "thread.json").write_bytes(b"")  # drift, too
    fresh = ArchiveStore(archive.root)
    try:
        fresh.reconcile()
        if how == "reindex":
            fresh.reindex()
        else:  # the manifests are made again before the drift's rebuild
            verify(fresh, repair=True)
        fresh.index.refresh()
        known = fresh.index.threads.get("ta")
        assert known is not None
        assert (known.user_id, known.name) == (alice["id"], "alice's")
        listed = fresh.list_threads(user_id=alice["id"])[0]
        assert [t["id"] for t in listed] == ["ta"]
        verify(fresh, repair=True)
        assert fresh.thread_author("ta") == ALICE
        with pytest.raises(NotAuthorError):
            fresh.write_step(step("ta", "pwned"), actor=MALLORY)
    finally:
        fresh.close()


@pytest.mark.parametrize("damage", ["emptied", "torn", "removed"])
def test_a_lost_author_nobody_knows_stays_nobodys(archive: ArchiveStore, damage: str) -> None:
    """The index lost the author too (it was rebuilt while the manifest was lost, or
    the power cut took it): ``verify --repair`` made a manifest with no author, and a
    thread without an author is everyone's to write. It now names an unknown author:
    nobody's to write, the app's own calls aside, until the app gives it to its
    author."""
    path = archive.layout.manifest("ta")
    if damage == "removed":
        path.unlink()
    elif damage == "emptied":
        path.write_bytes(b"")
    else:
        tear(path)
    archive.close()
    shutil.rmtree(archive.root / "index")  # the index goes with it
    fresh = ArchiveStore(archive.root)
    try:
        report = verify(fresh, repair=True)
        assert any("unknown" in str(p) for p in report.problems), report.problems
        assert fresh.thread_author("ta") == ""
        for who in (MALLORY, ALICE):
            with pytest.raises(NotAuthorError):
                fresh.write_step(step("ta", "pwned"), actor=who)
        assert not verify(fresh).problems  # repaired: the marker is no damage
        fresh.write_step(step("ta", "by-the-app"))  # the app itself still may
        alice = fresh.get_user(ALICE)
        assert alice is not None
        fresh.update_thread("ta", user_id=alice["id"])  # and gives it back
        fresh.write_step(step("ta", "hers"), actor=ALICE)
    finally:
        fresh.close()
    again = ArchiveStore(archive.root)
    try:
        with pytest.raises(NotAuthorError):
            again.write_step(step("ta", "pwned"), actor=MALLORY)
    finally:
        again.close()


def test_no_user_may_have_the_unknown_author_s_id(archive: ArchiveStore) -> None:
    """The unknown author (the ``userId`` ``verify --repair`` writes for a lost author)
    is nobody: a user file claiming that id (a copy, a merge, a hand edit) is no user,
    the id is no user to give a thread to, and the lost threads are in no sidebar."""
    from filelayer import UnknownUserError
    from filelayer.errors import CorruptFileError
    from filelayer.format import manifest, users

    path = archive.layout.manifest("ta")
    path.write_bytes(b"")
    archive.close()
    shutil.rmtree(archive.root / "index")
    fresh = ArchiveStore(archive.root)
    try:
        verify(fresh, repair=True)
        assert fresh.read_manifest("ta")["userId"] == manifest.UNKNOWN_AUTHOR  # type: ignore[index]
        claim = {"id": manifest.UNKNOWN_AUTHOR, "identifier": "mallory2", "createdAt": "x"}
        with pytest.raises(ValueError):
            users.write(fresh.layout.user_file("mallory2"), claim, durable=True)
        fresh.layout.user_file("mallory2").write_text(
            '{"id": "(unknown author)", "identifier": "mallory2", "metadata": {}}', "utf-8"
        )
        with pytest.raises(CorruptFileError):
            users.read(fresh.layout.user_file("mallory2"))
        assert fresh.get_user("mallory2") is None
        with pytest.raises(UnknownUserError):
            fresh.update_thread("ta", user_id=manifest.UNKNOWN_AUTHOR)
        fresh.reindex()
        listed, _ = fresh.list_threads(user_id=manifest.UNKNOWN_AUTHOR)
        assert listed == []
    finally:
        fresh.close()


def test_erasure_reaches_a_thread_whose_manifest_is_lost(archive: ArchiveStore) -> None:
    """The index still names the author of a thread whose manifest is lost: the erasure
    of that user deletes it too (it kept the conversation, and the rebuilt index kept
    the user's identifier)."""
    from filelayer.maintenance.retention import erase_user

    tear(archive.layout.manifest("ta"))
    fresh = ArchiveStore(archive.root)
    try:
        fresh.reconcile()
        report = erase_user(fresh, ALICE)
        assert [c.id for c in report.threads] == ["ta"]
        assert fresh.is_deleted("ta")
        assert fresh.index.threads.get("ta") is None
    finally:
        fresh.close()
    assert ALICE.encode() not in b"".join(
        p.read_bytes() for p in archive.root.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize("repaired", [False, True])
def test_an_erasure_names_the_threads_whose_author_nobody_knows(
    archive: ArchiveStore, repaired: bool
) -> None:
    """A manifest lost together with the index: nothing says whose the thread is, so
    the erasure cannot tell whether it is the user's. It must not report a complete
    erasure: it names the thread (before or after ``verify --repair`` gave it the
    unknown author), and the command exits with 1."""
    from filelayer.cli import main
    from filelayer.maintenance.retention import erase_user

    archive.layout.manifest("ta").write_bytes(b"")
    archive.close()
    shutil.rmtree(archive.root / "index")
    fresh = ArchiveStore(archive.root)
    try:
        if repaired:
            verify(fresh, repair=True)
        report = erase_user(fresh, ALICE)
        assert report.unattributed == ["ta"]
        assert not fresh.is_deleted("ta")  # not knowingly hers: left for a person to decide
        assert fresh.thread_author("tm") == MALLORY  # an attributed thread is not named
    finally:
        fresh.close()
    root = ["--root", str(archive.root)]
    assert main([*root, "erase-user", ALICE]) == 1
    before = snapshot(archive.root)
    for bad in ("../tm", "nosuch", "tm"):  # refused before anything is erased
        assert main([*root, "erase-user", ALICE, "--thread", bad]) == 2
        assert snapshot(archive.root) == before
    assert main([*root, "erase-user", ALICE, "--thread", "ta"]) == 0
    again = ArchiveStore(archive.root)
    try:
        assert again.is_deleted("ta") and not again.is_deleted("tm")
    finally:
        again.close()


def test_erasing_a_named_thread_takes_the_users_own_and_never_anothers(
    archive: ArchiveStore,
) -> None:
    """``--thread`` is for a thread whose author is lost. Mallory's thread whose manifest
    is damaged is still hers (the index names her): refused, nothing erased. Alice's
    thread whose manifest names her by id alone is hers: taken."""
    import json

    from filelayer.maintenance.retention import erase_user

    archive.update_thread("tb", name="by id", user_id=archive.get_user(ALICE)["id"])  # type: ignore[index]
    path = archive.layout.manifest("tb")
    doc = json.loads(path.read_text("utf-8"))
    doc.pop("userIdentifier", None)
    path.write_text(json.dumps(doc), "utf-8")
    archive.layout.manifest("tm").write_bytes(b"")
    archive.reconcile()
    before = snapshot(archive.root)
    with pytest.raises(InvalidValueError, match="another user's thread"):
        erase_user(archive, ALICE, threads=["ta", "tm"])
    assert snapshot(archive.root) == before
    report = erase_user(archive, ALICE, threads=["tb"])
    assert sorted(c.id for c in report.threads) == ["ta", "tb"]
    assert not archive.is_deleted("tm")


def test_an_empty_user_id_is_refused_not_an_open_thread(archive: ArchiveStore) -> None:
    """``user_id=""`` would have left alice's thread without an author, everyone's to
    write: refused, and nothing changes."""
    before = snapshot(archive.root)
    with pytest.raises(ValueError, match="non-empty"):
        archive.update_thread("ta", user_id="", actor=ALICE)
    assert snapshot(archive.root) == before
    with pytest.raises(NotAuthorError):
        archive.write_step(step("ta", "x"), actor=MALLORY)


def test_an_unknown_user_id_is_refused_not_a_lockout(archive: ArchiveStore) -> None:
    """An id no user has would have made alice's thread an unknown user's, and alice
    another user there, refused her own thread: refused, and nothing changes."""
    before = snapshot(archive.root)
    with pytest.raises(UnknownUserError) as caught:
        archive.update_thread("ta", user_id="no-such-user", actor=ALICE)
    assert isinstance(caught.value, ValueError) and caught.value.user_id == "no-such-user"
    assert snapshot(archive.root) == before
    fresh = ArchiveStore(archive.root)
    try:
        assert fresh.thread_author("ta") == ALICE
    finally:
        fresh.close()
    archive.write_step(step("ta", "still-mine"), actor=ALICE)


def test_a_user_erased_by_another_process_is_no_user_to_give_a_thread(
    archive: ArchiveStore,
) -> None:
    """A worker that knew a user still took their id after another process erased them,
    and wrote the erased identifier back into a new manifest."""
    from filelayer.maintenance.retention import erase_user

    bob = archive.upsert_user("bob")
    archive.update_thread("tb", user_id=bob["id"])  # this worker now knows bob
    other = ArchiveStore(archive.root)
    try:
        erase_user(other, "bob")
    finally:
        other.close()
    with pytest.raises(UnknownUserError):
        archive.update_thread("tc", user_id=bob["id"])
    assert not archive.layout.manifest("tc").exists()


def test_an_author_another_process_registers_later_is_known_at_once(store: ArchiveStore) -> None:
    """A manifest names by id alone a user the archive did not hold yet (a copy brought
    the thread before the user's record); once another process registers the user (a
    copy, the user's login on another worker), this process knows the author: it does
    not go on refusing the user their own thread."""
    import subprocess
    import sys

    from filelayer.format import users
    from tests.support.processes import subprocess_env

    bob_id = users.user_id("bob")
    store.put_manifest({"id": "t", "userId": bob_id, "createdAt": "2026-01-01T00:00:00.000000Z"})
    with pytest.raises(NotAuthorError):
        store.write_step(step("t", "s1"), actor="bob")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from filelayer import ArchiveStore; "
            "s = ArchiveStore(sys.argv[1]); s.upsert_user('bob'); s.close()",
            str(store.root),
        ],
        env=subprocess_env(),
        check=True,
    )
    store.write_step(step("t", "s2"), actor="bob")
    assert store.author_of("t") == "bob"
