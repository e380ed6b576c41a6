"""Element bytes on the database side of a copy: the storage client that holds them, and
the other places a row may point at them (a local file, an http(s) URL).

Chainlit's SQL layers keep no bytes in the database: a row names an object key in the
app's storage client (S3, Google Cloud Storage, Azure Blob, or one the app brings) and
perhaps a URL. Both SQL endpoints find that client the same way Chainlit does and upload
through it the same way, so this lives here once.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import stat
import urllib.parse
from pathlib import Path
from typing import Any

from .model import MAX_FETCH_BYTES, CopyUsageError, fetch_url


def storage_client_from_env() -> Any:
    """The storage client Chainlit itself would use for element files, or ``None``.

    Chainlit chooses it from environment variables (S3, Google Cloud Storage or Azure
    Blob, with ``BUCKET_NAME``); the same variables mean the same here, so bytes land
    where the app will look for them. Chainlit is imported only when one is configured.
    """
    env = os.environ.get
    bucket = env("BUCKET_NAME")
    s3 = bool(env("APP_AWS_ACCESS_KEY") and env("APP_AWS_SECRET_KEY") and env("APP_AWS_REGION"))
    gcs = bool(env("APP_GCS_PROJECT_ID"))
    azure = bool(env("APP_AZURE_STORAGE_ACCOUNT") and env("APP_AZURE_STORAGE_ACCESS_KEY"))
    if s3 + gcs + azure == 0:
        return None
    if s3 + gcs + azure > 1:
        raise CopyUsageError(
            "more than one storage client is configured (S3, GCS, Azure variables); "
            "unset all but one, as Chainlit would ignore them all"
        )
    if not bucket:
        raise CopyUsageError(
            "a storage client is configured but BUCKET_NAME is not set: set it to the "
            "bucket (or container) your Chainlit app uses"
        )
    try:
        if s3:
            from chainlit.data.storage_clients.s3 import S3StorageClient

            return S3StorageClient(
                bucket=bucket,
                region_name=env("APP_AWS_REGION"),
                aws_access_key_id=env("APP_AWS_ACCESS_KEY"),
                aws_secret_access_key=env("APP_AWS_SECRET_KEY"),
                endpoint_url=env("DEV_AWS_ENDPOINT"),
            )
        if gcs:
            from chainlit.data.storage_clients.gcs import GCSStorageClient

            return GCSStorageClient(
                project_id=env("APP_GCS_PROJECT_ID"),
                client_email=env("APP_GCS_CLIENT_EMAIL"),
                private_key=env("APP_GCS_PRIVATE_KEY"),
                bucket_name=bucket,
            )
        from chainlit.data.storage_clients.azure_blob import AzureBlobStorageClient

        return AzureBlobStorageClient(
            container_name=bucket,
            storage_account=str(env("APP_AZURE_STORAGE_ACCOUNT")),
            storage_key=str(env("APP_AZURE_STORAGE_ACCESS_KEY")),
        )
    except ImportError as exc:
        raise CopyUsageError(
            f"a storage client is configured but cannot be loaded ({exc}): install Chainlit "
            "and its client package (boto3, google-cloud-storage or azure-storage-blob)"
        ) from exc


async def upload(
    client: Any, key: str, data: bytes, mime: str, *, download_name: str | None = None
) -> dict[str, Any]:
    """Put ``data`` under ``key`` (replacing what is there) and return what the client
    says about it (Chainlit's clients give the ``url`` and ``object_key``).

    ``download_name``: also give the object the download name Chainlit's official layer
    gives (its SQLAlchemy layer gives none), where the client takes one: not GCS, whose
    client sets its own."""
    kwargs: dict[str, Any] = {"object_key": key, "data": data, "mime": mime, "overwrite": True}
    if download_name is not None:
        try:
            accepts = "content_disposition" in inspect.signature(client.upload_file).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts and type(client).__name__ != "GCSStorageClient":
            kwargs["content_disposition"] = f'attachment; filename="{download_name}"'
    result = await client.upload_file(**kwargs)
    return result if isinstance(result, dict) else {}


def clean_key(key: str) -> bool:
    """Whether an ``objectKey`` is a plain relative key (as Chainlit's ``<user id>/<element
    id>/<name>``): not absolute, no ``..`` step, no NUL. Any other is never handed to the
    storage client, which may map keys onto a directory."""
    parts = key.replace("\\", "/").split("/")
    return bool(key) and "\0" not in key and not key.startswith(("/", "~")) and ".." not in parts


def local_file(reference: Any, *bases: Path) -> Path | None:
    """The local file a ``url`` or ``objectKey`` names (``file://`` URL or a path), only
    if it is a regular file inside one of ``bases``, reached through no symbolic link.

    A row is data, not configuration: it may name ``/proc/self/environ`` (the copy's own
    database password), ``~/.ssh/id_rsa`` or ``../../etc/passwd``, and the bytes it names
    end up in the archive, served to the thread's author. So a path is taken relative to
    the directory the database's files belong to, never ``~``, and whatever it resolves
    to must stay there."""
    if not isinstance(reference, str) or not reference:
        return None
    text = reference
    if text.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        text = urllib.parse.unquote(parsed.path)
    elif "://" in text:
        return None
    if not text or "\0" in text:
        return None
    for base in bases:
        found = _inside(base, text)
        if found is not None:
            return found
    return None


def _inside(base: Path, text: str) -> Path | None:
    """``text`` (relative to ``base``, or absolute) as a regular file under ``base``'s real
    directory, reached through no link; ``None`` otherwise."""
    with contextlib.suppress(OSError, ValueError):
        given = os.path.normpath(os.path.join(os.path.abspath(base), text))
        real_base = os.path.realpath(base)
        for prefix in (os.path.normpath(os.path.abspath(base)), real_base):
            if given.startswith(prefix.rstrip(os.sep) + os.sep):
                wanted = os.path.join(real_base, os.path.relpath(given, prefix))
                break
        else:
            return None
        if os.path.realpath(wanted) != wanted:
            return None  # a symbolic link on the way: it may lead anywhere
        if any(part.startswith(".") for part in Path(os.path.relpath(wanted, real_base)).parts):
            return None  # a hidden file or directory: an app's secrets (.env), git's data
        if stat.S_ISREG(os.lstat(wanted).st_mode):
            return Path(wanted)
    return None


def read_local(path: Path) -> bytes | None:
    """The bytes of a file :func:`local_file` chose, opened without following a link
    (one put there since cannot redirect the read), at most ``MAX_FETCH_BYTES``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(MAX_FETCH_BYTES + 1)
        except OSError:
            return None
    return data if len(data) <= MAX_FETCH_BYTES else None


async def read_reference(
    reference: str, *bases: Path, fetch_urls: bool = False, trusted: bool = False
) -> bytes | None:
    """The bytes behind a local file inside ``bases`` or an http(s) URL (with
    ``fetch_urls``; only public addresses unless ``trusted``, as a storage client's own
    read URL is: a bucket may well be on the local network)."""
    path = local_file(reference, *bases)
    if path is None and trusted and reference.lower().startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(reference).path))
    if path is not None:
        return read_local(path)
    if fetch_urls:
        return await fetch_url(reference, public_only=not trusted)
    return None
