"""The conformance corpus: every archive in tests/conformance/ reads as its ``expected/``.

Each case is an archive and the reading docs/format.md gives it (one JSON file per
thread, as ``filelayer export --format json`` prints it, and ``archive.json``); see
"Conformance corpus" in docs/format.md. The project's own reader runs over it here in
the mode of this run, and in a subprocess in each mode (``FILELAYER_PURE=1`` and not),
since the two decoders must agree on every damaged byte too. Release archives
(``release-<version>/``) were written by that release and are never regenerated: the
release rule below makes every release add its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import filelayer

CORPUS = Path(__file__).resolve().parent.parent / "conformance"
sys.path.insert(0, str(CORPUS))

import read_archive  # noqa: E402

CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "archive").is_dir())


def expected(case: str) -> dict[str, str]:
    return read_archive.read_tree(CORPUS / case / "expected")


def test_the_corpus_has_a_case_for_every_rule_family() -> None:
    assert {
        "users-and-threads",
        "journal-operations",
        "merge-out-of-order",
        "order",
        "deleted-threads",
        "compaction",
        "damaged-lines",
        "manifests",
        "index-drift",
        "erased-user",
    } <= set(CASES)
    for case in CASES:
        assert (CORPUS / case / "expected" / "archive.json").is_file(), case


@pytest.mark.parametrize("case", CASES)
def test_the_reader_reads_each_case_as_expected(case: str) -> None:
    assert read_archive.reading(CORPUS / case / "archive") == expected(case)


@pytest.mark.parametrize("case", CASES)
def test_a_reader_written_from_the_document_alone_reads_each_case_the_same(case: str) -> None:
    """doc_reader.py imports nothing from filelayer: where it disagrees with the expected
    reading, docs/format.md does not say enough (or says something untrue)."""
    import doc_reader

    source = (CORPUS / "doc_reader.py").read_text("utf-8").splitlines()
    assert not [line for line in source if re.match(r"\s*(from|import) filelayer", line)]
    assert doc_reader.read(CORPUS / case / "archive") == expected(case)


@pytest.mark.parametrize("pure", [False, True], ids=["fast", "pure"])
def test_both_modes_read_the_whole_corpus_as_expected(pure: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FILELAYER_PURE"}
    if pure:
        env["FILELAYER_PURE"] = "1"
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(CORPUS)!r})\n"
        "import read_archive\n"
        "from pathlib import Path\n"
        "from filelayer import _backend\n"
        f"cases = {CASES!r}\n"
        "root = Path(sys.argv[1])\n"
        "out = {c: read_archive.reading(root / c / 'archive') for c in cases}\n"
        "print(json.dumps({'pure': _backend.PURE, 'readings': out}))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(CORPUS)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    answer = json.loads(run.stdout)
    if pure:
        assert answer["pure"] is True
    for case in CASES:
        assert answer["readings"][case] == expected(case), case


def test_this_version_has_its_release_archive_in_the_corpus() -> None:
    """The release rule: every release adds an archive it wrote (``python
    tests/conformance/make_corpus.py --release``) before it is tagged, and every later
    version reads all of them as they say."""
    release = CORPUS / f"release-{filelayer.__version__}"
    assert (release / "archive" / "filelayer.json").is_file(), (
        f"no archive written by {filelayer.__version__} in the corpus: run "
        "`python tests/conformance/make_corpus.py --release` and commit it whole"
    )
    assert (release / "expected" / "archive.json").is_file()


def test_the_release_script_writes_an_archive_that_reads_as_it_says(tmp_path: Path) -> None:
    """The tool the release rule relies on works before a release needs it."""
    import make_corpus

    target = tmp_path / "release-next"
    assert make_corpus.make_release(target) == 0
    assert (target / "archive" / "filelayer.json").is_file()
    reading = read_archive.read_tree(target / "expected")
    assert read_archive.reading(target / "archive") == reading
    found = json.loads(reading["archive.json"])
    assert {"t-alice", "t-ops", "t-merge", "t-order", "t-compact", "t-kept"} <= set(
        found["threads"]
    )
    assert make_corpus.make_release(target) == 1  # never written again


def test_index_drift_is_reported_and_repaired_and_get_thread_never_drifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The index of this case is stale on purpose: the directories are what counts.

    Whether opening the archive compares its index with the directories (it does when
    the index has no watermarks, as here, or writers died) is not this case's business:
    the stale index is looked at by a store that leaves the index alone (``upgrade=False``),
    and what an ordinary opening and ``verify --repair`` give is checked either way."""
    import shutil

    from filelayer import ArchiveStore
    from filelayer.cli import main
    from filelayer.maintenance.verify import verify

    root = tmp_path / "archive"
    shutil.copytree(CORPUS / "index-drift" / "archive", root)
    stale = ArchiveStore(root, create=False, upgrade=False)
    report = "\n".join(str(p) for p in verify(stale).problems)
    stale.close()
    assert "t-added is missing from the index" in report
    assert "t-removed is in the index but not on disk" in report
    assert "t-renamed: index differs in name" in report
    assert "t-steady: index differs in messages" in report
    store = ArchiveStore(root, create=False)
    assert store.get_thread("t-removed") is None
    assert store.get_thread("t-renamed")["name"] == "t-renamed (new name)"  # type: ignore[index]
    store.close()
    assert main(["--root", str(root), "verify", "--repair"]) in (0, 1)
    assert main(["--root", str(root), "verify"]) == 0
    capsys.readouterr()
    listed = json.loads(expected("index-drift")["archive.json"])["list"]
    store = ArchiveStore(root, create=False)
    assert [t["id"] for t in store.list_threads(user_id=None)[0]] == [t["id"] for t in listed]
    store.close()


@pytest.mark.parametrize("case", CASES)
def test_compacting_a_case_changes_nothing_it_reads(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/format.md: reading the compacted form gives what reading the old journal
    gave, whatever lines the journal holds (journals with damaged lines are left alone)."""
    import shutil

    from filelayer.cli import main

    root = tmp_path / "archive"
    shutil.copytree(CORPUS / case / "archive", root)
    assert main(["--root", str(root), "compact"]) in (0, 1)
    capsys.readouterr()
    assert read_archive.reading(root) == expected(case)


def test_the_generated_cases_are_what_the_script_writes_today(tmp_path: Path) -> None:
    """The committed cases come from make_corpus.py and the current writer, byte for
    byte. When this fails after a change of what the layer writes (the teams work's
    ordering stamps, for one), run ``python tests/conformance/make_corpus.py``, review
    the diff of every ``expected/`` against docs/format.md, and commit it."""
    import make_corpus

    for name in make_corpus.CASES:
        make_corpus.make(name, tmp_path)
        written = tmp_path / name
        files = {
            p.relative_to(written).as_posix(): p.read_bytes()
            for p in sorted(written.rglob("*"))
            if p.is_file()
        }
        committed = {
            p.relative_to(CORPUS / name).as_posix(): p.read_bytes()
            for p in sorted((CORPUS / name).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }
        assert files.keys() == committed.keys(), name
        for relative, data in files.items():
            if relative.endswith(".sqlite"):
                continue  # its header names the SQLite library that wrote it
            assert data == committed[relative], f"{name}/{relative}"


def test_the_fixed_clock_is_gone_after_the_corpus_is_made(tmp_path: Path) -> None:
    """make_corpus.py's fixed clock leaves no filelayer module behind it, also one first
    imported while it ran (the erasure module, by the erase-user case): otherwise the
    tests after this one, in the same process, would stamp their times from it."""
    script = (
        "import sys, tempfile\n"
        "from pathlib import Path\n"
        "import make_corpus\n"
        "assert 'filelayer.maintenance.retention' not in sys.modules\n"
        "for name in make_corpus.CASES:\n"
        "    make_corpus.make(name, Path(tempfile.mkdtemp()))\n"
        "print(sorted(n for n, m in sys.modules.items() if n.startswith('filelayer')\n"
        "      and hasattr(m, 'now_iso') and m.now_iso.__module__ == 'make_corpus'))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CORPUS), str(CORPUS.parent.parent)])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
