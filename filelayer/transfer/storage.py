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
import urllib.parse
from pathlib import Path
from typing import Any

from .model import CopyUsageError, fetch_url


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


def local_file(reference: Any, *bases: Path) -> Path | None:
    """The local file a ``url`` or ``objectKey`` names (``file://`` URL or a path)."""
    if not isinstance(reference, str) or not reference:
        return None
    text = reference
    if text.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(text)
        text = urllib.parse.unquote(parsed.path)
    elif "://" in text:
        return None
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(b / path for b in bases)]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if candidate.is_file():
                return candidate
    return None


async def read_reference(reference: str, *bases: Path, fetch_urls: bool = True) -> bytes | None:
    """The bytes behind a local file or an http(s) URL."""
    path = local_file(reference, *bases)
    if path is not None:
        try:
            return path.read_bytes()
        except OSError:
            return None
    if fetch_urls:
        return await fetch_url(reference)
    return None
