"""The archive's ``.gitattributes``: how git merges and stores the archive's files.

Like the ``.gitignore`` block (see :func:`filelayer.layout.upgrade_gitignore`), filelayer
owns one block at the end of the file, written when an archive is created and brought up
to date whenever one is opened; lines above it are the user's and are kept.

- Journals and JSON documents merge through filelayer's driver (``merge=filelayer``,
  which ``filelayer git-setup`` registers): two branches that both wrote an archive
  merge without a conflict (see :mod:`filelayer.gitmerge`).
- ``-text`` on them, ``binary`` on element files: git never rewrites their bytes
  (``core.autocrlf`` would otherwise change text element files, which ``verify`` would
  then report damaged, and the line endings of journals).
"""

from __future__ import annotations

GITATTRIBUTES_FILE = ".gitattributes"
DRIVER = "filelayer"
"""The merge driver's name in ``.gitattributes`` and in git's configuration."""

BEGIN = "# >>> filelayer"
END = "# <<< filelayer"
BLOCK = f"""\
{BEGIN}: rewritten when the archive is opened; add your own rules above it.
# Journals and JSON documents merge with filelayer's driver, which `filelayer git-setup`
# registers (without it git merges them as text and may stop with conflicts). Git never
# changes their bytes (-text), and element files are binary. For Git LFS, put
# "*/elements/* filter=lfs diff=lfs merge=lfs -text" in threads/.gitattributes.
*.jsonl -text merge={DRIVER}
*.json -text merge={DRIVER}
threads/*/elements/* binary
{END}
"""


def upgrade(text: str | None) -> str:
    """The ``.gitattributes`` an archive should have, given the one it has (``None``:
    none): the user's lines, in order, then filelayer's block."""
    if text is None:
        return BLOCK
    kept: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        kept.append(line)
        if line.rstrip() == END:  # drop the block, back to its last opening
            begins = [i for i, k in enumerate(kept) if k.startswith(BEGIN)]
            if begins:
                start = begins[-1]
                if start and not kept[start - 1].strip():
                    start -= 1
                del kept[start:]
    user = "\n".join(kept).rstrip("\n")
    return f"{user}\n\n{BLOCK}" if user else BLOCK
