"""fal's storage: CDN tokens, direct upload, signed-URL upload, and serving `/files/...`."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from emulator.routes.common import emu_of, json_response
from emulator.state import Emulator

router = APIRouter()

_UNAUTHORIZED = {"detail": "Unauthorized"}


@router.get("/.well-known/jwks.json", include_in_schema=False)
async def jwks(request: Request) -> Response:
    """The webhook verification keys (fal serves them on its REST host)."""
    return json_response(200, emu_of(request).signer.jwks(), fal=False)


@router.post("/storage/auth/token", include_in_schema=False)
async def storage_token(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED, fal=False)
    return json_response(200, emu.store.issue_token(), fal=False)


@router.post("/files/upload", include_in_schema=False)
async def upload(request: Request) -> Response:
    """CDN upload: `Authorization: Bearer <token from /storage/auth/token>`, raw bytes."""
    emu = emu_of(request)
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not emu.store.token_valid(token.strip()):
        return json_response(401, _UNAUTHORIZED, fal=False)
    data = await request.body()
    stored = emu.store.save_bytes(
        data, request.headers.get("x-fal-file-name"), request.headers.get("content-type")
    )
    return json_response(200, {"access_url": stored.url}, fal=False)


@router.post("/storage/upload/initiate", include_in_schema=False)
async def upload_initiate(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED, fal=False)
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return json_response(422, {"detail": "Body must be a JSON object"}, fal=False)
    return json_response(
        200, emu.store.initiate_upload(body.get("file_name"), body.get("content_type")), fal=False
    )


@router.put("/storage/upload/{bucket}/{key}", include_in_schema=False)
async def upload_put(request: Request, bucket: str, key: str) -> Response:
    """The signed `upload_url` of an initiated upload (no other auth, like a signed GCS URL)."""
    emu = emu_of(request)
    stored = emu.store.complete_upload(
        bucket,
        key,
        request.query_params.get("signature", ""),
        await request.body(),
        request.headers.get("content-type"),
    )
    if stored is None:
        return json_response(403, {"detail": "Invalid or expired upload URL"}, fal=False)
    return Response(status_code=200)


async def serve_small_file(emu: Emulator, scope: Scope, receive: Receive, send: Send) -> bool:
    """The fast path of `serve_file` (the front calls it before FastAPI): a whole small file,
    from memory, with the very headers `FileResponse` gives it. False for anything else (a Range
    request, a large or missing file, another path), which the route below answers."""
    method = scope["method"]
    path: str = scope["path"]
    if method not in ("GET", "HEAD") or not path.startswith("/files/"):
        return False
    bucket, _, key = path[len("/files/") :].partition("/")
    if not bucket or not key or "/" in key:
        return False
    if any(name == b"range" for name, _ in scope["headers"]):
        return False
    small = emu.store.small_file(bucket, key)
    if small is None:
        return False
    headers = FileResponse(small.path, media_type=small.content_type, stat_result=small.stat)
    await send({"type": "http.response.start", "status": 200, "headers": headers.raw_headers})
    body = b"" if method == "HEAD" else small.data
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return True


@router.api_route("/files/{bucket}/{key}", methods=["GET", "HEAD"], include_in_schema=False)
async def serve_file(request: Request, bucket: str, key: str) -> Response:
    """Public file URLs, with Content-Length and HTTP Range (206 / 416)."""
    found = emu_of(request).store.lookup(bucket, key)
    if found is None:
        return json_response(404, {"detail": "File not found"}, fal=False)
    path, content_type = found
    return FileResponse(path, media_type=content_type)
