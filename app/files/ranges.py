"""Serve a stored object over HTTP with conditional and single-range requests (RFC 9110 §13-14).

What is implemented, and what is deliberately not:

* `Range: bytes=a-b`, `bytes=a-`, `bytes=-n` (one range) → 206 with `Content-Range`;
* a range starting at or past the end, or `bytes=-0` → 416 with `Content-Range: bytes */size`;
* anything else in `Range` (another unit, a syntax error, `a-b` with b < a, several ranges) is
  ignored and the whole object is sent with 200, which RFC 9110 §14.2 allows ("a server MAY
  ignore the Range header field"); multipart/byteranges is not worth its complexity for media
  players, which ask for one range at a time;
* `If-Range` is honoured with the strong ETag only (there is no `Last-Modified`);
* `If-None-Match` → 304; the ETag is the SHA-256 of the content, so it is strong and the same on
  every backend and process;
* HEAD answers the headers GET would (a Range on HEAD is ignored, as §14.2 prescribes: GET is
  the only method range handling is defined for).

It belongs to the file endpoints, its one caller, not to `app.storage`: it is HTTP (headers in,
a Starlette response out), and reads any backend through `Storage.open_range`, so storage stays
free of the web layer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse

from app.storage import Storage, StoredObject

_RANGE_SPEC = re.compile(r"^([0-9]*)-([0-9]*)$")  # [0-9], not \d: no Unicode digits
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._()+=@,;! -]")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in HTTP

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiableError(ValueError):
    """The Range header is valid but selects no byte of the object (→ 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range a `Range` header selects in an object of `size` bytes.

    Returns `None` when the whole object should be sent: no header, or one ignored because it
    is malformed, not in bytes, has last < first, or asks for several ranges. Raises
    `RangeNotSatisfiableError` when the range starts at or past the end of the object, or is the
    empty suffix `-0`. A range ending past the end is clipped, a suffix longer than the object
    selects all of it; for an empty object a suffix range is ignored (no 206 can describe it).
    """
    if header is None:
        return None
    unit, sep, range_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    # RFC 9110 §5.6.1: recipients ignore empty list elements ("bytes=0-1,").
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.match(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None
        if start >= size:
            raise RangeNotSatisfiableError(f"range starts at {start}, object has {size} bytes")
        return ByteRange(start, min(end, size - 1))
    if not last:
        return None
    suffix = int(last)
    if suffix == 0:
        raise RangeNotSatisfiableError("empty suffix range")
    if size == 0:
        return None
    return ByteRange(max(0, size - suffix), size - 1)


async def stream_stored_object(
    storage: Storage,
    obj: StoredObject,
    request_headers: Mapping[str, str],
    *,
    method: str = "GET",
    filename: str | None = None,
    disposition: Literal["inline", "attachment"] = "inline",
) -> Response:
    """The HTTP response for `obj`: 200, 206, 304 or 416 (see the module docstring).

    `request_headers` is the request's headers (a Starlette `Headers`, or any mapping; it is
    read case-insensitively). `method` is the request method, `GET` or `HEAD`. The body is
    streamed from `storage` in 64 KiB chunks. Raises `ObjectNotFoundError` if the object
    disappeared since `obj` was read.
    """
    headers = request_headers if isinstance(request_headers, Headers) else Headers(request_headers)
    response_headers = {
        "Accept-Ranges": "bytes",
        "ETag": obj.etag,
        "Content-Type": obj.content_type,
        # The content type comes from upstream or an upload: never let a browser guess another.
        "X-Content-Type-Options": "nosniff",
    }
    if filename is not None:
        response_headers["Content-Disposition"] = content_disposition(disposition, filename)
    elif disposition != "inline":
        response_headers["Content-Disposition"] = disposition

    if _etag_matches(headers.get("if-none-match"), obj.etag):
        return Response(status_code=304, headers={"ETag": obj.etag})

    byte_range: ByteRange | None = None
    range_header = headers.get("range")
    if method.upper() == "GET" and range_header is not None:
        if_range = headers.get("if-range")
        # If-Range with anything but our current strong ETag (a date, a weak or old tag) means
        # "the copy I have is stale": send everything.
        if if_range is None or if_range.strip() == obj.etag:
            try:
                byte_range = parse_range(range_header, obj.size_bytes)
            except RangeNotSatisfiableError:
                response_headers["Content-Range"] = f"bytes */{obj.size_bytes}"
                response_headers.pop("Content-Type")
                return Response(status_code=416, headers=response_headers)

    if byte_range is None:
        status_code, start, end, length = 200, 0, None, obj.size_bytes
    else:
        status_code, start, end, length = 206, byte_range.start, byte_range.end, byte_range.length
        response_headers["Content-Range"] = (
            f"bytes {byte_range.start}-{byte_range.end}/{obj.size_bytes}"
        )
    response_headers["Content-Length"] = str(length)

    if method.upper() == "HEAD":
        return Response(status_code=status_code, headers=response_headers)
    body = await storage.open_range(obj.key, start, end)
    return StreamingResponse(body, status_code=status_code, headers=response_headers)


def content_disposition(disposition: Literal["inline", "attachment"], filename: str) -> str:
    """A `Content-Disposition` value with a safe ASCII `filename` and, when the name is not
    plain ASCII, the exact name as RFC 8187 `filename*` (what browsers prefer).

    Any directory part, control character, quote or backslash is dropped first.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch != '"')
    name = name.strip().lstrip(".") or "download"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = _UNSAFE_FILENAME_CHARS.sub("_", ascii_name).strip().lstrip(".") or "download"
    value = f'{disposition}; filename="{ascii_name}"'
    if ascii_name != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    # RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so W/"x" matches "x".
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in candidates
