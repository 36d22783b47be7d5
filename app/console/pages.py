"""The console's HTML: one shell per page, filled by the browser-side module from the JSON API.

Every value is escaped where it is put in (``html.escape``); nothing inline — no script, no
style attribute — so the Content-Security-Policy below needs no 'unsafe-inline' and no hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True)
class Page:
    name: str  # what the module draws (data-page)
    path: str
    title: str


TENANT_PAGES = (
    Page("jobs", "/console/jobs", "Jobs"),
    Page("new", "/console/new", "New job"),
    Page("compare", "/console/compare", "Compare models"),
    Page("usage", "/console/usage", "Usage"),
    Page("keys", "/console/keys", "API keys"),
    Page("webhooks", "/console/webhooks", "Webhooks"),
)
ADMIN_PAGES = (
    Page("tenants", "/console/admin/tenants", "Tenants"),
    Page("prices", "/console/admin/prices", "Prices"),
    Page("admin-usage", "/console/admin/usage", "Usage across tenants"),
    Page("reconcile", "/console/admin/reconcile", "Reconcile with fal"),
    Page("fleet", "/console/admin/fleet", "Fleet"),
)
JOB_PAGE = Page("job", "/console/jobs/{id}", "Job")
NOT_FOUND = Page("not-found", "", "Not found")

_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
{csrf}<title>{title} · Foley console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/static/console.css">
{script}</head>
"""


def _head(title: str, csrf: str | None, script: bool) -> str:
    return _HEAD.format(
        title=escape(title),
        csrf=f'<meta name="csrf-token" content="{escape(csrf)}">\n' if csrf else "",
        script='<script type="module" src="/console/static/console.js"></script>\n'
        if script
        else "",
    )


def shell(
    page: Page,
    *,
    admin: bool,
    read_only: bool,
    who: str,
    csrf: str,
    resource_id: str = "",
    title: str | None = None,
) -> str:
    pages = ADMIN_PAGES if admin else TENANT_PAGES
    current = ' aria-current="page"'
    links = "".join(
        f'<li><a href="{p.path}"{current if p.name == page.name else ""}>{escape(p.title)}</a></li>'
        for p in pages
    )
    title = title or page.title
    return (
        _head(title, csrf, script=True)
        + f'<body data-page="{escape(page.name)}" data-role="{"admin" if admin else "tenant"}" '
        f'data-read-only="{"true" if read_only else "false"}" data-id="{escape(resource_id)}">\n'
        '<a class="skip" href="#main">Skip to content</a>\n'
        '<header class="top"><a class="brand" href="/console">Foley</a>\n'
        f'<nav aria-label="Console"><ul>{links}</ul></nav>\n'
        '<form class="sign-out" method="post" action="/console/sign-out">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        f'<span class="who">{escape(who)}{" (read-only)" if read_only else ""}</span> '
        '<button type="submit">Sign out</button></form></header>\n'
        f'<main id="main" tabindex="-1"><h1 id="title">{escape(title)}</h1>\n'
        '<p id="status" role="status" aria-live="polite"></p>\n'
        '<div id="content"></div></main>\n</body>\n</html>\n'
    )


def sign_in(error: str | None = None) -> str:
    message = (
        f'<p class="error" id="sign-in-error" role="alert">{escape(error)}</p>\n' if error else ""
    )
    described = ' aria-describedby="sign-in-error"' if error else ""
    return (
        _head("Sign in", None, script=False)
        + '<body data-page="sign-in">\n<main id="main" class="narrow">\n'
        "<h1>Foley console</h1>\n"
        '<form method="post" action="/console/sign-in" class="card">\n'
        '<label for="secret">Tenant API key or admin token</label>\n'
        '<input id="secret" name="secret" type="password" autocomplete="current-password" '
        f"required autofocus{described}>\n"
        f"{message}"
        '<button type="submit">Sign in</button>\n'
        "</form>\n"
        '<p class="hint">The key is sent once, in the form\'s body; the console then keeps a '
        "session cookie.</p>\n"
        "</main>\n</body>\n</html>\n"
    )
