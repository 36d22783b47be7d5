"""Fetching a model's `video_url` (http(s) or `data:` URI) the way a fal runner does.

Any failure is the model's 422 `file_download_error`; an input over the model's size limit is a
422 `file_too_large`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from emulator.errors import ModelError

DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_DOWNLOAD_MSG = "Failed to download the file. Please check if the URL is accessible."


def _too_large(url: str, max_bytes: int, field: str) -> ModelError:
    return ModelError(
        field,
        f"File size exceeds the maximum allowed size of {max_bytes // (1024 * 1024)} MB.",
        "file_too_large",
        url,
    )


def _suffix_for(content_type: str | None, url_path: str) -> str:
    suffix = Path(url_path).suffix.lower()
    if suffix and len(suffix) <= 6:
        return suffix
    if content_type:
        return mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return ".bin"


def _decode_data_uri(url: str) -> tuple[bytes, str | None]:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ValueError("data URI without a comma")
    params = header.split(";")
    content_type = params[0] or None
    if "base64" in params[1:]:
        return base64.b64decode(payload, validate=False), content_type
    return unquote_to_bytes(payload), content_type


async def fetch_input(
    client: httpx.AsyncClient,
    url: str,
    dest_dir: Path,
    max_bytes: int,
    *,
    field: str = "video_url",
) -> Path:
    """The file at ``url`` (the input's ``field``), in ``dest_dir``."""
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    stem = "input" if field == "video_url" else field
    if url.startswith("data:"):
        try:
            data, content_type = _decode_data_uri(url)
        except (ValueError, binascii.Error) as exc:
            raise ModelError(field, _DOWNLOAD_MSG, "file_download_error", url) from exc
        if len(data) > max_bytes:
            raise _too_large(url, max_bytes, field)
        path = dest_dir / f"{stem}{_suffix_for(content_type, '')}"
        await asyncio.to_thread(path.write_bytes, data)
        return path

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ModelError(field, _DOWNLOAD_MSG, "file_download_error", url)
    try:
        async with client.stream("GET", url, timeout=DOWNLOAD_TIMEOUT) as response:
            if response.status_code != 200:
                raise ModelError(field, _DOWNLOAD_MSG, "file_download_error", url)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(url, max_bytes, field)
            suffix = _suffix_for(response.headers.get("content-type"), parts.path)
            path = dest_dir / f"{stem}{suffix}"
            size = 0
            handle = await asyncio.to_thread(path.open, "wb")
            try:
                async for chunk in response.aiter_bytes(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(url, max_bytes, field)
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                handle.close()
    except httpx.HTTPError as exc:
        raise ModelError(field, _DOWNLOAD_MSG, "file_download_error", url) from exc
    return path
