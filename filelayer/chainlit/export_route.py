"""The app's "export this conversation" route, beside the element route.

``GET {root_path}/filelayer/export/{thread_id}?format=markdown`` answers the Markdown
export with its files as one zip (``<stem>.md``, ``<stem>.files/``, ``plotly.min.js``),
the same files ``filelayer export -o DIR`` writes; ``?format=html`` answers the HTML
page alone, its images inside it as ``data:`` URLs and its other files linked to the
element route.

Who may export is who may read the thread's elements: the one rule of
:mod:`filelayer.chainlit.access`, which the element route applies too (the author; any
logged-in user when the thread is shared; anyone in an app without login for a thread
without an author), and the same answers to everyone else (401 not logged in, 404
logged in, whether the thread exists or not).

The HTML page comes from the app's origin but holds other people's words: it is sent
with a policy that runs no script at all and loads nothing but its own inline styles
and images (``default-src 'none'``), in a sandbox, so a message crafted to look like
markup can do nothing even if the renderer's escaping had a hole.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO
from urllib.parse import quote

from fastapi import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from ..export.bundle import FORMATS, UNRENDERABLE, Bundle, build, describe
from . import serve
from .access import readable_thread, refusal
from .element_response import content_disposition

log = logging.getLogger("filelayer")

ROUTE_NAME = "filelayer_export"
ROUTE_PREFIX = "/filelayer/export"
ROUTE_SUFFIX = ROUTE_PREFIX + "/{thread_id}"
_PAGE_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "sandbox allow-popups allow-popups-to-escape-sandbox allow-downloads"
)
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
"""Every member of the zip has this time: the same thread gives the same bytes."""


def export_url(thread_id: str, fmt: str = "markdown") -> str:
    """The URL that exports ``thread_id`` (``markdown``: a zip; ``html``: a page)."""
    return f"{serve.url_prefix()}{ROUTE_PREFIX}/{quote(thread_id, safe='')}?format={fmt}"


_SPOOL_BYTES = 4 << 20
"""A zip larger than this is built in a temporary file, not in memory."""
_CHUNK = 1 << 20


def zip_bundle(bundle: Bundle) -> bytes:
    """The export's files in one zip, as ``filelayer export -o DIR`` lays them out."""
    out = io.BytesIO()
    write_zip(bundle, out)
    return out.getvalue()


def write_zip(bundle: Bundle, out: IO[bytes]) -> None:
    """Write the zip of :func:`zip_bundle` into ``out`` (seekable)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in bundle.items():
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            if isinstance(data, bytes):
                archive.writestr(info, data)
            else:  # an element file, copied in pieces
                with open(data, "rb") as source, archive.open(info, "w") as member:
                    shutil.copyfileobj(source, member, _CHUNK)


def _spooled_zip(bundle: Bundle) -> tuple[IO[bytes], int]:
    """The zip in a file read from its start, and its size: in memory while small, on
    the disk beyond :data:`_SPOOL_BYTES` (a thread's files may be large, and several
    requests may be made at once: the server must not hold each zip whole)."""
    out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (closed by _pieces)
    try:
        write_zip(bundle, out)
        size = out.tell()
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return out, size


def _pieces(file: IO[bytes]) -> Iterator[bytes]:
    """The file's bytes a piece at a time (read in a worker thread by the response),
    then the file closed (a temporary file: gone with it)."""
    try:
        while piece := file.read(_CHUNK):
            yield piece
    finally:
        file.close()


async def serve_export(request: Request, thread_id: str, format: str = "markdown") -> Response:
    admitted = await readable_thread(request, thread_id)
    if isinstance(admitted, Response):
        return admitted
    layer = admitted[0]
    if format not in FORMATS:
        return Response(
            f"format must be one of: {', '.join(FORMATS)}\n",
            status_code=400,
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )
    thread = await layer.calls.read(layer.store.get_thread, thread_id)
    if thread is None:
        return refusal(404)
    try:
        bundle = await layer.calls.read_off_loop(
            build,
            layer.store,
            thread,
            format,
            self_contained=format == "html",
            element_url=serve.element_url,
        )
        if format == "html":
            data = bundle.text.encode()
        else:
            file, size = await layer.calls.read_off_loop(_spooled_zip, bundle)
    except UNRENDERABLE as exc:  # a hand-edited or damaged value in the thread's files
        log.warning("filelayer: thread %s not exported: %s", thread_id, describe(exc))
        return Response(
            "this conversation holds a value the export cannot render; "
            "`filelayer verify` on the server names damaged files\n",
            status_code=422,
            media_type="text/plain",
            headers={"Cache-Control": "no-store"},
        )
    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if format == "html":
        headers["Content-Security-Policy"] = _PAGE_POLICY
        headers["Content-Disposition"] = content_disposition("inline", bundle.name)
        return HTMLResponse(data, headers=headers)
    headers["Content-Disposition"] = content_disposition("attachment", f"{bundle.stem}.zip")
    headers["Content-Length"] = str(size)
    return StreamingResponse(_pieces(file), media_type="application/zip", headers=headers)


serve.add_route(serve.ExtraRoute(ROUTE_NAME, ROUTE_SUFFIX, serve_export, ("GET",)))
