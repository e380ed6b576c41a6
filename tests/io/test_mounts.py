"""The warning for an archive root on a network, FUSE or shared file system, read from
a made-up ``/proc/self/mountinfo`` (no real mount needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from filelayer import ArchiveStore
from filelayer._io import mounts as _mounts

LOCAL = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"


def mountinfo(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(LOCAL + "".join(lines))
    return path


def mount_line(point: Path | str, fstype: str, source: str = "server:/export") -> str:
    escaped = str(point).replace(" ", "\\040")
    return f"99 27 0:77 / {escaped} rw,relatime shared:9 - {fstype} {source} rw\n"


@pytest.mark.parametrize(
    ("fstype", "named"),
    [
        ("nfs4", "NFS"),
        ("nfs", "NFS"),
        ("cifs", "SMB/CIFS"),
        ("smb3", "SMB/CIFS"),
        ("fuse.sshfs", "FUSE (fuse.sshfs)"),
        ("fuse.grpcfuse", "FUSE (fuse.grpcfuse)"),
        ("9p", "9p"),
        ("virtiofs", "virtiofs"),
        ("fakeowner", "Docker Desktop"),
        ("vboxsf", "VirtualBox"),
    ],
)
def test_a_shared_file_system_is_named_with_advice(tmp_path: Path, fstype: str, named: str) -> None:
    share = tmp_path / "my share"
    root = share / "chats"
    root.mkdir(parents=True)
    info = mountinfo(tmp_path, mount_line(share, fstype))
    message = _mounts.check_root(root, info)
    assert message is not None
    assert named in message and str(share) in message
    assert "flock" in message and "fsync" in message and "local disk" in message


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"])
def test_local_file_systems_and_overlays_pass(tmp_path: Path, fstype: str) -> None:
    info = mountinfo(tmp_path, mount_line(tmp_path, fstype, "/dev/sdb1"))
    assert _mounts.check_root(tmp_path / "chats", info) is None


def test_the_deepest_mount_holding_the_root_counts(tmp_path: Path) -> None:
    share = tmp_path / "net"
    local = share / "local"
    local.mkdir(parents=True)
    info = mountinfo(tmp_path, mount_line(share, "nfs4"), mount_line(local, "ext4", "/dev/sdc"))
    assert _mounts.check_root(local / "chats", info) is None
    assert _mounts.check_root(share / "chats", info) is not None
    # A name that merely starts like the mount point is not inside it.
    assert _mounts.mount_of(tmp_path / "network", info) == ("/", "ext4")
    # A later mount over the same point hides the earlier one.
    over = mountinfo(tmp_path, mount_line(share, "nfs4"), mount_line(share, "ext4", "/dev/sdd"))
    assert _mounts.check_root(share / "chats", over) is None


def test_unreadable_or_odd_mountinfo_says_nothing(tmp_path: Path) -> None:
    assert _mounts.check_root(tmp_path, tmp_path / "missing") is None
    odd = tmp_path / "odd"
    odd.write_text("garbage\n\n1 2 3\n")
    assert _mounts.check_root(tmp_path, odd) is None


def test_the_store_warns_once_when_it_opens_such_a_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    monkeypatch.setattr(_mounts, "MOUNTINFO", mountinfo(tmp_path, mount_line(share, "cifs")))
    monkeypatch.setattr(_mounts, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="filelayer"):
        ArchiveStore(share / "chats").close()
        ArchiveStore(share / "chats").close()
    warnings = [r for r in caplog.records if "SMB/CIFS" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert warnings[0].name == "filelayer"


def test_this_machine_root_is_read_from_the_real_mountinfo(tmp_path: Path) -> None:
    if not _mounts.MOUNTINFO.exists():
        pytest.skip("no /proc/self/mountinfo (not Linux)")
    found = _mounts.mount_of(tmp_path)
    assert found is not None and tmp_path.as_posix().startswith(found[0].rstrip("/"))
