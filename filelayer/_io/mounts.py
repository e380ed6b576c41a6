"""Warning about archive roots on file systems that may not keep filelayer's promises.

Writers are kept apart by ``flock`` and durability rests on ``fsync``. Network file
systems (NFS, SMB/CIFS), FUSE file systems and the shared folders of virtual machines
and containers (9p, virtiofs, Docker Desktop's bind mounts, VirtualBox's shared
folders) may honour neither: two processes on two machines do not see each other's
locks, and an ``fsync`` may return before the server has the data. When the store
opens a root on such a file system it logs a warning saying what to do. Linux only
(it reads ``/proc/self/mountinfo``); elsewhere nothing is checked.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("filelayer")

MOUNTINFO = Path("/proc/self/mountinfo")

_NETWORK = {
    "nfs": "NFS",
    "nfs4": "NFS",
    "cifs": "SMB/CIFS",
    "smb3": "SMB/CIFS",
    "smbfs": "SMB/CIFS",
    "ncpfs": "NetWare",
    "afs": "AFS",
    "ceph": "CephFS",
    "glusterfs": "GlusterFS",
    "lustre": "Lustre",
    "gpfs": "GPFS",
    "beegfs": "BeeGFS",
    "9p": "9p (a virtual machine's or WSL's shared folder)",
    "virtiofs": "virtiofs (a virtual machine's or container's shared folder)",
    "fakeowner": "Docker Desktop's shared folder",
    "drvfs": "WSL's Windows drive",
    "vboxsf": "VirtualBox's shared folder",
    "vmhgfs": "VMware's shared folder",
    "prl_fs": "Parallels' shared folder",
}
"""File system types that may not honour ``flock`` or ``fsync``, and their names.
Overlay file systems (a container's own writable layer) are not among them: locks and
fsyncs reach the local file system underneath."""

_warned: set[tuple[str, str]] = set()


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: Path, mountinfo: Path | None = None) -> tuple[str, str] | None:
    """The mount point holding ``path`` and its file system type (``fuse.sshfs``,
    ``nfs4``...), or ``None`` where that cannot be told. ``mountinfo``: another file
    than ``/proc/self/mountinfo`` (tests)."""
    try:
        text = (mountinfo or MOUNTINFO).read_text("utf-8", "replace")
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            point = _unescape(fields[4])
            fstype = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # The longest mount point holding the path wins; of equal ones, the later
        # (a mount over another hides it).
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def shared_filesystem(fstype: str) -> str | None:
    """A readable name for a file system type that may not honour ``flock`` or
    ``fsync``; ``None`` for a local one."""
    if fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk")):
        return f"FUSE ({fstype})"
    return _NETWORK.get(fstype)


def check_root(root: Path, mountinfo: Path | None = None) -> str | None:
    """Log a warning (once per root and process) if ``root`` is on a network, FUSE or
    shared file system; return the warning, or ``None``."""
    found = mount_of(root, mountinfo)
    if found is None:
        return None
    point, fstype = found
    name = shared_filesystem(fstype)
    if name is None:
        return None
    message = (
        f"filelayer: the archive {root} is on a {name} file system (mounted at {point}). "
        "Such file systems may not honour the locks (flock) that keep writers apart, "
        "nor fsync, which the durability modes rest on: two processes on two machines "
        "can interleave writes, and a crash of the server or of the connection can lose "
        "acknowledged writes. Keep the archive on a local disk of the machine that runs "
        "the app (ext4, XFS, btrfs, APFS; in a container: a volume or bind mount of a "
        "local directory), with every writer process on that machine; to serve from "
        "several machines, move to PostgreSQL (filelayer copy)."
    )
    key = (str(root), fstype)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)
    return message
