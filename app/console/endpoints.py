"""The console's routes: its pages, sign-in and sign-out, its static files, a sound's pictures.

Not in the OpenAPI description (they answer HTML); what the pages show comes from the JSON API.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import av
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth.dependencies import CurrentTenant, console_session
from app.console import pages, service, sessions
from app.db.session import SessionDep
from app.jobs import service as jobs_service
from app.kit.problems import Forbidden, NotFound, Unprocessable
from app.media.errors import MediaError

router = APIRouter(prefix="/console", include_in_schema=False)

STATIC_DIR = Path(__file__).parent / "static"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """Every asset, read once: name → (bytes, content type, ETag). Only these names are served."""
    found = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and path.suffix in _TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[path.relative_to(STATIC_DIR).as_posix()] = (body, _TYPES[path.suffix], etag)
    return found


STATIC = _load_static()


def _secured(response: Response, *, cache: str = "no-store") -> Response:
    response.headers.update(pages.SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


def _html(body: str, status: int = 200) -> Response:
    return _secured(HTMLResponse(body, status_code=status))


def _redirect(url: str) -> Response:
    return _secured(RedirectResponse(url, status_code=303))


def _home(admin: bool) -> str:
    return (pages.ADMIN_PAGES if admin else pages.TENANT_PAGES)[0].path


def _same_origin(request: Request) -> bool:
    """A form posted from our own page. SameSite=Strict keeps the cookie off other sites'
    requests; this keeps another site from signing a browser in (login CSRF)."""
    origin = request.headers.get("origin")
    if origin is not None:
        return urlsplit(origin).netloc == request.headers.get("host")
    return request.headers.get("sec-fetch-site") == "same-origin"


@router.get("")
@router.get("/")
async def console_home(request: Request) -> Response:
    signed_in = await console_session(request)
    return _redirect("/console/sign-in" if signed_in is None else _home(signed_in.admin))


@router.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    signed_in = await console_session(request)
    if signed_in is not None:
        return _redirect(_home(signed_in.admin))
    return _html(pages.sign_in())


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    if not _same_origin(request):
        raise service.CrossOriginRefused("Sign in from the console's own page.")
    form = await request.form(max_files=0, max_fields=2)
    secret = form.get("secret")
    if not isinstance(secret, str) or not secret.strip():
        return _html(pages.sign_in("Enter a tenant API key or the admin token."), 400)
    state = request.app.state
    try:
        done = await service.sign_in(
            state.sessionmaker,
            state.settings,
            state.admin_auth_throttle,
            secret=secret.strip(),
            source=request.client.host if request.client else "unknown",
        )
    except service.SignInRefused as exc:
        return _html(pages.sign_in(exc.detail), 401)
    response = _redirect(_home(done.admin))
    response.set_cookie(
        sessions.COOKIE,
        done.token,
        max_age=int(state.settings.console_session_ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    signed_in = await console_session(request)
    if signed_in is not None:
        form = await request.form(max_files=0, max_fields=2)
        given = form.get("csrf_token")
        if not signed_in.csrf_matches(given if isinstance(given, str) else None):
            raise Forbidden(
                "Signing out needs the page's CSRF token.",
                code="csrf_token_invalid",
                param="csrf_token",
            )
        await service.sign_out(request.app.state.sessionmaker, signed_in.id)
    response = _redirect("/console/sign-in")
    response.delete_cookie(
        sessions.COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/static/{name:path}")
async def static(name: str, request: Request) -> Response:
    found = STATIC.get(name)
    if found is None:
        raise NotFound("No such console asset.", code="not_found", param="name")
    body, media_type, etag = found
    cache = "no-cache"  # revalidated each time (ETag): a new version is seen at once
    if request.headers.get("if-none-match") == etag:
        return _secured(Response(status_code=304, headers={"ETag": etag}), cache=cache)
    return _secured(Response(body, media_type=media_type, headers={"ETag": etag}), cache=cache)


def _page_route(page: pages.Page, *, admin: bool) -> Callable[[Request], Awaitable[Response]]:
    async def show(request: Request) -> Response:
        signed_in = await console_session(request)
        if signed_in is None:
            return _redirect("/console/sign-in")
        if signed_in.admin != admin:
            return _redirect(_home(signed_in.admin))
        return _html(_shell(signed_in, page))

    show.__name__ = f"console_{page.name.replace('-', '_')}"
    return show


def _shell(
    signed_in: sessions.SignedIn, page: pages.Page, *, resource_id: str = "", title: str = ""
) -> str:
    if signed_in.api_key is None or signed_in.tenant is None:
        who, read_only = "operator", False
    else:
        who = f"{signed_in.tenant.name} · {signed_in.api_key.prefix}…"
        read_only = signed_in.api_key.read_only
    return pages.shell(
        page,
        admin=signed_in.admin,
        read_only=read_only,
        who=who,
        csrf=signed_in.csrf_token,
        resource_id=resource_id,
        title=title or None,
    )


for _page in pages.TENANT_PAGES:
    router.add_api_route(_page.path.removeprefix("/console"), _page_route(_page, admin=False))
for _page in pages.ADMIN_PAGES:
    router.add_api_route(_page.path.removeprefix("/console"), _page_route(_page, admin=True))


@router.get("/jobs/{job_id}")
async def job_page(job_id: str, request: Request) -> Response:
    signed_in = await console_session(request)
    if signed_in is None:
        return _redirect("/console/sign-in")
    if signed_in.tenant is None:
        return _redirect(_home(admin=True))
    try:
        job_uuid = uuid.UUID(job_id)
        async with request.app.state.sessionmaker() as session:
            await jobs_service.get_job(session, signed_in.tenant, job_uuid)
    except (ValueError, jobs_service.JobNotFound):
        # Another tenant's job is as absent as one that never existed.
        return _html(_shell(signed_in, pages.NOT_FOUND, title="No such job"), 404)
    return _html(
        _shell(signed_in, pages.JOB_PAGE, resource_id=str(job_uuid), title=f"Job {job_uuid}")
    )


@router.get("/media/{file_id}/{kind}.png")
async def sound_picture(
    file_id: uuid.UUID,
    kind: Literal["waveform", "spectrogram"],
    request: Request,
    tenant: CurrentTenant,
    session: SessionDep,
) -> Response:
    """A stored file's sound drawn as a waveform or a spectrogram (PNG)."""
    etag = f'"{file_id}-{kind}-1"'  # a stored file never changes
    cache = "private, max-age=86400"
    if request.headers.get("if-none-match") == etag:
        return _secured(Response(status_code=304, headers={"ETag": etag}), cache=cache)
    state = request.app.state
    tmp = state.settings.data_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        body = await service.sound_picture(
            session, state.storage, tenant_id=tenant.id, file_id=file_id, kind=kind, tmp_dir=tmp
        )
    except (MediaError, av.FFmpegError) as exc:
        raise Unprocessable(
            "The file's sound could not be decoded.", code="sound_unreadable", param="file_id"
        ) from exc
    return _secured(Response(body, media_type="image/png", headers={"ETag": etag}), cache=cache)
