"""Console sessions: sign-in and sign-out, the cookie's flags, CSRF on every mutation, read-only
keys, revocation, the operator's session, and the pages' security headers."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from app.console import pages, sessions
from tests.conftest import ADMIN, ADMIN_TOKEN, TenantCreds, make_tenant

ORIGIN = {"Origin": "http://foley.test"}


async def sign_in(api: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await api.post("/console/sign-in", data={"secret": secret}, headers=ORIGIN)


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, html
    return found.group(1)


async def signed_in_page(api: httpx.AsyncClient, path: str = "/console/jobs") -> tuple[str, str]:
    r = await api.get(path)
    assert r.status_code == 200, r.text
    return r.text, csrf_of(r.text)


async def test_a_tenant_key_signs_in_with_a_strict_httponly_cookie(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await sign_in(api, tenant.key)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/jobs"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain http here; see the https test
    assert any(f.startswith("max-age=") for f in flags)
    assert tenant.key not in cookie
    # The cookie is a session, not the key: the API answers the tenant's own data with it.
    r = await api.get("/v1/me")
    assert r.status_code == 200, r.text
    assert r.json()["tenant"]["id"] == tenant.id


async def test_the_cookie_is_secure_under_https(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    secure = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app), base_url="https://foley.test"
    )
    async with secure:
        r = await secure.post(
            "/console/sign-in",
            data={"secret": tenant.key},
            headers={"Origin": "https://foley.test"},
        )
    assert r.status_code == 303
    assert "secure" in {p.strip().lower() for p in r.headers["set-cookie"].split(";")}


async def test_a_wrong_secret_is_refused_without_a_cookie(api: httpx.AsyncClient) -> None:
    for secret in ("fk_live_not-a-key", "not-the-admin-token"):
        r = await sign_in(api, secret)
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "neither a valid API key nor the admin token" in r.text
    assert (await api.get("/v1/me")).status_code == 401


async def test_sign_in_from_another_site_is_refused(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.post(
        "/console/sign-in", data={"secret": tenant.key}, headers={"Origin": "https://evil.test"}
    )
    assert r.status_code == 403
    assert r.json()["code"] == "cross_origin_request"
    r = await api.post("/console/sign-in", data={"secret": tenant.key})  # no Origin at all
    assert r.status_code == 403
    assert "set-cookie" not in r.headers


async def test_a_mutation_without_its_csrf_token_is_refused(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    await sign_in(api, tenant.key)
    _, csrf = await signed_in_page(api)
    r = await api.post("/v1/keys", json={"name": "from-console"})
    assert r.status_code == 403
    assert r.json()["code"] == "csrf_token_invalid"
    assert r.json()["param"] == "X-CSRF-Token"
    r = await api.post("/v1/keys", json={"name": "forged"}, headers={"X-CSRF-Token": "x" * 43})
    assert r.status_code == 403
    r = await api.post("/v1/keys", json={"name": "from-console"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    names = [k["name"] for k in (await api.get("/v1/keys")).json()["data"]]
    assert names.count("from-console") == 1
    assert "forged" not in names


async def test_a_bearer_key_needs_no_csrf_token(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.post("/v1/keys", json={"name": "ci"}, headers=tenant.headers)
    assert r.status_code == 201, r.text


async def test_a_read_only_key_gets_a_read_only_console(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys", json={"read_only": True}, headers=ADMIN
    )
    await sign_in(api, r.json()["key"])
    html, csrf = await signed_in_page(api)
    assert 'data-read-only="true"' in html
    r = await api.post("/v1/keys", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    assert r.json()["code"] == "key_read_only"
    assert (await api.get("/v1/jobs")).status_code == 200


async def test_revoking_the_key_ends_its_sessions(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    await sign_in(api, tenant.key)
    assert (await api.get("/v1/me")).status_code == 200
    me = (await api.get("/v1/me")).json()
    r = await api.post(
        f"/v1/admin/tenants/{tenant.id}/keys/{me['key']['id']}/revoke", headers=ADMIN
    )
    assert r.status_code == 200
    assert (await api.get("/v1/me")).status_code == 401
    r = await api.get("/console/jobs")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in"


async def test_sign_out_needs_the_csrf_token_and_ends_the_session(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    await sign_in(api, tenant.key)
    cookie = api.cookies.get(sessions.COOKIE)
    _, csrf = await signed_in_page(api)
    r = await api.post("/console/sign-out", data={"csrf_token": "wrong"})
    assert r.status_code == 403
    assert (await api.get("/v1/me")).status_code == 200
    r = await api.post("/console/sign-out", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in"
    assert sessions.COOKIE not in api.cookies
    # The session itself is gone, not only the browser's cookie.
    assert cookie
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.app),
        base_url="http://foley.test",
        cookies={sessions.COOKIE: cookie},
    ) as replay:
        assert (await replay.get("/v1/me")).status_code == 401


async def test_the_operator_signs_in_with_the_admin_token(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await sign_in(api, ADMIN_TOKEN)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/admin/tenants"
    _, csrf = await signed_in_page(api, "/console/admin/tenants")
    assert (await api.get("/v1/admin/tenants")).status_code == 200
    r = await api.post("/v1/admin/tenants", json={"name": "from-console"})
    assert r.status_code == 403
    assert r.json()["code"] == "csrf_token_invalid"
    r = await api.post(
        "/v1/admin/tenants", json={"name": "from-console"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 201
    # The operator is no tenant: tenant endpoints refuse the session, tenant pages send it home.
    r = await api.get("/v1/jobs")
    assert r.status_code == 403
    assert r.json()["code"] == "operator_session"
    r = await api.get("/console/jobs")
    assert r.headers["location"] == "/console/admin/tenants"


async def test_a_tenant_session_is_no_operator(api: httpx.AsyncClient, tenant: TenantCreds) -> None:
    await sign_in(api, tenant.key)
    assert (await api.get("/v1/admin/tenants")).status_code == 401
    r = await api.get("/console/admin/tenants")
    assert r.headers["location"] == "/console/jobs"


async def test_pages_carry_a_strict_csp_and_nothing_inline(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    r = await api.get("/console/sign-in")
    assert r.status_code == 200
    await sign_in(api, tenant.key)
    for page in pages.TENANT_PAGES:
        r = await api.get(page.path)
        assert r.status_code == 200, page.path
        csp = r.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
        ):
            assert directive in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        # No inline script or style, and nothing fetched from another host.
        assert re.search(r"<script(?![^>]*\bsrc=)", r.text) is None
        assert "style=" not in r.text
        assert "<style" not in r.text
        assert re.search(r"(src|href)=\"(https?:)?//", r.text) is None
        assert tenant.key not in r.text


async def test_static_assets_are_served_from_the_package(api: httpx.AsyncClient) -> None:
    r = await api.get("/console/static/console.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    etag = r.headers["etag"]
    again = await api.get("/console/static/console.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
    for name in ("lib.js", "tenant.js", "admin.js", "charts.js", "console.css"):
        body = (await api.get(f"/console/static/{name}")).text
        # Every asset is the console's own: no other host is referred to.
        loads = r"""(import|from|fetch\(|url\(|src|href)\s*[:=(]?\s*["'`]?(https?:)?//"""
        assert re.search(loads, body) is None, name
    assert (await api.get("/console/static/../endpoints.py")).status_code == 404
    assert (await api.get("/console/static/nothing.js")).status_code == 404


async def test_another_tenants_job_is_a_404(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds
) -> None:
    r = await api.post(
        "/v1/jobs",
        json={"model": "thinksound", "input": {"video_url": "https://example.com/a.mp4"}},
        headers=other_tenant.headers,
    )
    assert r.status_code == 202, r.text
    theirs = r.json()["id"]
    await sign_in(api, tenant.key)
    r = await api.get(f"/console/jobs/{theirs}")
    assert r.status_code == 404
    assert "No such job" in r.text
    assert theirs not in r.text.replace(f"/console/jobs/{theirs}", "")
    assert (await api.get(f"/v1/jobs/{theirs}")).status_code == 404
    assert (await api.get(f"/console/jobs/{uuid.uuid4()}")).status_code == 404
    assert (await api.get("/console/jobs/not-a-uuid")).status_code == 404


async def test_signed_out_pages_send_to_sign_in(api: httpx.AsyncClient) -> None:
    for path in (
        "/console",
        "/console/jobs",
        "/console/admin/fleet",
        f"/console/jobs/{uuid.uuid4()}",
    ):
        r = await api.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/console/sign-in"


@pytest.mark.parametrize("ttl_s", [0])
async def test_an_ended_session_signs_nobody_in(
    api: httpx.AsyncClient, tenant: TenantCreds, ttl_s: int
) -> None:
    from datetime import timedelta

    api.app.state.settings.console_session_ttl = timedelta(seconds=ttl_s)  # type: ignore[attr-defined]
    r = await sign_in(api, tenant.key)
    assert r.status_code == 303
    assert (await api.get("/v1/me")).status_code == 401


async def test_tenant_keys_are_the_tenants_own(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds
) -> None:
    created = (await api.post("/v1/keys", json={"name": "a"}, headers=tenant.headers)).json()
    assert created["key"].startswith("fk_live_")
    theirs = (await api.get("/v1/keys", headers=other_tenant.headers)).json()["data"]
    assert created["id"] not in {k["id"] for k in theirs}
    r = await api.post(f"/v1/keys/{created['id']}/revoke", headers=other_tenant.headers)
    assert r.status_code == 404
    assert r.json()["code"] == "api_key_not_found"
    r = await api.post(
        f"/v1/keys/{created['id']}/rotate", json={"grace_seconds": 0}, headers=tenant.headers
    )
    assert r.status_code == 201
    rotated = r.json()
    assert rotated["new"]["key"].startswith("fk_live_")
    r = await api.post(f"/v1/keys/{rotated['new']['id']}/revoke", headers=tenant.headers)
    assert r.status_code == 200
    assert r.json()["revoked_at"] is not None
    assert (
        await api.get("/v1/me", headers={"Authorization": f"Bearer {rotated['new']['key']}"})
    ).status_code == 401
    r = await api.post(f"/v1/keys/{rotated['new']['id']}/rotate", json={}, headers=tenant.headers)
    assert r.status_code == 409


async def test_make_tenant_helper_still_works(api: httpx.AsyncClient) -> None:
    creds = await make_tenant(api, "third")
    assert creds.key.startswith("fk_live_")
