"""The console in a real headless Chromium, against a real gateway (uvicorn, a worker, the fal
emulator): sign in, create a job and watch it reach ``succeeded`` without reloading, both videos
load and play, the waveform shows, a usage chart is drawn, a key is created and revoked, sign
out; a mutation without its CSRF token is refused, another tenant's job is a 404, the page asks
no other host, and the basics of accessibility hold (labels, keyboard, contrast).

Screenshots are kept in ``tests/artifacts/console/`` (git-ignored; ``FOLEY_TEST_ARTIFACTS``
moves it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from app.console import sessions
from tests.e2e.conftest import ADMIN, Gateway
from tests.support.browser import LOOPBACK_ONLY_ARGS, chromium, only_loopback
from tests.support.clips import Clip, make_bouncing_square
from tests.support.waiting import eventually

ARTIFACTS = (
    Path(os.environ.get("FOLEY_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
    / "console"
)
JOB_DEADLINE_MS = 90_000

# Every form control labelled; text at WCAG AA contrast against what is behind it (4.5:1, 3:1
# for large text). Disabled controls are exempt (WCAG 1.4.3), and so are the SVG charts' ticks
# (their colour is a fill, checked in the stylesheet: --muted on white is 7.6:1).
ACCESSIBILITY = r"""() => {
  const problems = [];
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label")
      || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push("unlabelled " + el.outerHTML.slice(0, 100));
  }
  const parse = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c;
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg") || el.matches(":disabled")) continue;
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const [a, b] = [lum(parse(style.color)), lum(behind(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      const text = el.textContent.trim().slice(0, 40);
      problems.push(`contrast ${ratio.toFixed(2)}: ${el.tagName} "${text}"`);
    }
  }
  return problems;
}"""

FOCUSED = """() => {
  const el = document.activeElement;
  return el ? (el.getAttribute("href") || el.id || el.textContent.trim().slice(0, 30)) : null;
}"""


async def ready(page: Any) -> None:
    await page.wait_for_selector("body[data-ready]", state="attached", timeout=30_000)
    assert await page.get_attribute("body", "data-ready") == "true", await page.text_content(
        "#status"
    )


async def until(page: Any, predicate: str, arg: Any = None, what: str = "") -> Any:
    """Evaluate ``predicate`` (a JS function) until it is truthy. Not page.wait_for_function: it
    evaluates a string inside the page, which the console's CSP (no 'unsafe-eval') refuses."""
    return await eventually(
        lambda: page.evaluate(predicate, arg), timeout=30, interval=0.1, what=what or predicate
    )


async def accessible(page: Any) -> None:
    assert await page.evaluate(ACCESSIBILITY) == [], page.url


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@contextlib.asynccontextmanager
async def running_worker(gw: Gateway, owner: str) -> AsyncIterator[None]:
    worker = gw.make_worker(owner=owner)
    task = asyncio.create_task(worker.run(shutdown_grace_s=5))
    try:
        yield
    finally:
        worker.stop()
        await task


async def test_the_console_in_a_browser(
    gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    clips: dict[str, Clip],
) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    left_loopback: list[str] = []
    failed: list[str] = []
    csp_reports: list[str] = []
    # No worker at first: a job waits in the gateway until the test starts one, so the pages are
    # seen following a job that is still running.
    async with gateway(workers=0) as gw, async_playwright() as p:
        base = gw.base_url
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = await gw.client.patch(
            f"/v1/admin/tenants/{gw.tenant_id}", json={"budget_usd": "5.00"}, headers=admin
        )
        assert r.status_code == 200, r.text
        _, other_key = await gw.new_tenant("other")
        r = await gw.client.post(
            "/v1/jobs",
            json={"model": "thinksound", "input": {"video_url": gw.video_url(clips["short"])}},
            headers={"Authorization": f"Bearer {other_key}"},
        )
        theirs = r.json()["id"]

        browser = await p.chromium.launch(
            executable_path=str(executable),
            args=[*LOOPBACK_ONLY_ARGS, "--autoplay-policy=no-user-gesture-required"],
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await only_loopback(page, left_loopback)
        page.on(
            "requestfailed",
            # A media element or an event stream closed by a navigation is aborted: not a failure.
            lambda request: (
                None
                if request.failure == "net::ERR_ABORTED"
                else failed.append(f"{request.url} {request.failure}")
            ),
        )
        page.on(
            "console",
            lambda message: (
                csp_reports.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        navigations: list[str] = []
        page.on(
            "framenavigated",
            lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
        )

        # Sign in with the keyboard alone: the field has the focus, Enter submits.
        await page.goto(f"{base}/console")
        assert page.url == f"{base}/console/sign-in"
        await accessible(page)
        await page.keyboard.type(gw.tenant_key)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/console/jobs")
        await ready(page)
        cookie = next(c for c in await context.cookies() if c["name"] == sessions.COOKIE)
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["value"] != gw.tenant_key
        assert gw.tenant_key not in page.url
        await accessible(page)
        reached = []
        for _ in range(16):
            await page.keyboard.press("Tab")
            reached.append(await page.evaluate(FOCUSED))
        assert reached[0] == "#main"  # the skip link first
        assert {"/console/new", "/console/keys", "/console/usage"} <= set(reached)
        await shot(page, "01-jobs-empty")

        # A new job: an uploaded clip, a model, a parameter from its schema, the estimate.
        await page.goto(f"{base}/console/new")
        await ready(page)
        await page.get_by_label("Video file").set_input_files(clips["bounce"].path)
        await page.get_by_label("Model", exact=True).select_option("fal-ai/thinksound")
        await page.get_by_label("Prompt").fill("a rubber ball bouncing")
        await page.get_by_label("Steps").fill("12")
        await page.get_by_role("button", name="Estimate").click()
        await expect(page.locator("#estimate")).to_contain_text("Estimate $", timeout=30_000)
        await expect(page.locator("#remaining")).to_contain_text("left this period")
        await accessible(page)
        await shot(page, "02-new-job")
        await page.get_by_role("button", name="Create job").click()
        await page.wait_for_url(re.compile(r".*/console/jobs/[0-9a-f-]{36}$"))
        job_id = page.url.rsplit("/", 1)[1]
        await ready(page)
        await expect(page.locator("#job-facts [data-status]")).to_have_attribute(
            "data-status", "queued"
        )

        # The list follows it: the row turns succeeded once a worker runs, with no reload.
        await page.goto(f"{base}/console/jobs")
        await ready(page)
        row = page.locator(f'tr[data-job-id="{job_id}"] [data-status]')
        await expect(row).to_have_attribute("data-status", "queued")
        seen = len(navigations)
        async with running_worker(gw, "console-worker-1"):
            job = await gw.wait(job_id, timeout=JOB_DEADLINE_MS / 1000)
            assert job["status"] == "succeeded", json.dumps(job["error"])
            await expect(row).to_have_attribute("data-status", "succeeded", timeout=15_000)
        assert len(navigations) == seen
        await shot(page, "03-jobs-live")

        # The job: both videos load and play, the audio's waveform and spectrogram show.
        await page.goto(f"{base}/console/jobs/{job_id}")
        await ready(page)
        for video in ("#input-video", "#result-video"):
            await until(page, "(v) => document.querySelector(v).readyState >= 2", video)
            await page.evaluate("(v) => document.querySelector(v).play()", video)
            await until(page, "(v) => document.querySelector(v).currentTime > 0", video)
        await until(page, "() => document.querySelector('#result-audio').readyState >= 1")
        for image, height in (("#waveform", 120), ("#spectrogram", 256)):
            size = await until(
                page,
                "(i) => { const e = document.querySelector(i); return e.complete"
                " && e.naturalWidth ? [e.naturalWidth, e.naturalHeight] : null; }",
                image,
            )
            assert size == [800, height]
        await expect(page.locator("#job-facts")).to_contain_text("a rubber ball bouncing")
        await expect(page.locator("#timeline li")).not_to_have_count(0)
        assert await page.locator("#timeline").text_content() is not None
        await expect(page.locator("#timeline")).to_contain_text("job.succeeded")
        await expect(page.locator("#logs")).to_be_visible()
        await accessible(page)
        await shot(page, "04-job")

        # A job's own page follows it too, from queued to succeeded, without reloading.
        second = await gw.create(
            {"model": "thinksound", "input": {"video_url": gw.video_url(clips["short"])}}
        )
        await page.goto(f"{base}/console/jobs/{second['id']}")
        await ready(page)
        status = page.locator("#job-facts [data-status]")
        await expect(status).to_have_attribute("data-status", "queued")
        seen = len(navigations)
        async with running_worker(gw, "console-worker-2"):
            await expect(status).to_have_attribute(
                "data-status", "succeeded", timeout=JOB_DEADLINE_MS
            )
            await expect(page.locator("#result-video")).to_be_visible()
            assert len(navigations) == seen

            # Usage: the charts are drawn from the settled jobs, with the budget gauge.
            await page.goto(f"{base}/console/usage")
            await ready(page)
            await page.wait_for_selector("svg.chart rect.bar", timeout=30_000)
            assert await page.locator("svg.chart").count() == 2
            assert await page.locator("svg.gauge").count() == 1
            csv = await page.get_attribute("#csv-link", "href")
            assert csv is not None and csv.startswith("/v1/usage/export.csv?from=")
            answer = await page.evaluate(
                f"fetch({csv!r}).then(async r => [r.status, await r.text()])"
            )
            assert answer[0] == 200
            assert job_id in answer[1]
            await accessible(page)
            await shot(page, "05-usage")

        # Keys: one created (its secret shown once) and revoked.
        await page.goto(f"{base}/console/keys")
        await ready(page)
        await page.get_by_label("Name").fill("browser-key")
        await page.get_by_role("button", name="Create key").click()
        secret = (await page.locator(".secret-value").text_content() or "").strip()
        assert secret.startswith("fk_live_")
        assert (
            await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        ).status_code == 200
        created = page.locator(f'tr[data-prefix="{secret[:12]}"]')
        await expect(created.locator(".key-state")).to_have_text("active")
        await accessible(page)
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await created.get_by_role("button", name="Revoke").click()
        await expect(created.locator(".key-state")).to_contain_text("revoked")
        assert (
            await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        ).status_code == 401
        await shot(page, "06-keys")

        # A mutation without the CSRF token is refused, even from the console's own page.
        refused = await page.evaluate(
            """fetch('/v1/keys', {method: 'POST', headers: {'Content-Type': 'application/json'},
                 body: '{"name": "forged"}'}).then(async r => [r.status, (await r.json()).code])"""
        )
        assert refused == [403, "csrf_token_invalid"]

        # Another tenant's job is a 404, page and API alike.
        response = await page.goto(f"{base}/console/jobs/{theirs}")
        assert response is not None and response.status == 404
        assert await page.evaluate(f"fetch('/v1/jobs/{theirs}').then(r => r.status)") == 404

        # Sign out: the cookie is gone and the session with it.
        await page.goto(f"{base}/console/jobs")
        await ready(page)
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{base}/console/sign-in")
        assert sessions.COOKIE not in {c["name"] for c in await context.cookies()}
        assert await page.evaluate("fetch('/v1/jobs').then(r => r.status)") == 401
        await context.add_cookies([{**cookie}])  # the old cookie, put back, signs nobody in
        assert await page.evaluate("fetch('/v1/jobs').then(r => r.status)") == 401
        await shot(page, "07-signed-out")

        # The operator: the admin token in the same field; tenants, the fleet, reconcile.
        await page.goto(f"{base}/console/sign-in")
        await page.get_by_label("Tenant API key or admin token").fill(ADMIN)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/console/admin/tenants")
        await ready(page)
        await expect(page.get_by_role("heading", name="e2e")).to_be_visible()
        await accessible(page)
        await shot(page, "08-tenants")
        await page.goto(f"{base}/console/admin/fleet")
        await ready(page)
        await expect(page.locator("#slots")).to_contain_text("in use")
        await accessible(page)
        await shot(page, "09-fleet")
        await page.goto(f"{base}/console/admin/reconcile")
        await ready(page)
        await page.get_by_role("button", name="Reconcile").click()
        await expect(page.locator("#reconcile-verdict")).to_have_text(
            "The ledger matches fal's bill.", timeout=30_000
        )
        await shot(page, "10-reconcile")
        await browser.close()
    print(f"console screenshots: {ARTIFACTS}")
    assert left_loopback == []
    assert failed == []
    assert csp_reports == []


async def test_compare_webhooks_and_the_operators_other_pages(
    gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    clips: dict[str, Clip],
    tmp_path: Path,
) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright, expect

    left_loopback: list[str] = []
    errors: list[str] = []
    async with gateway() as gw, async_playwright() as p:
        base = gw.base_url
        browser = await p.chromium.launch(executable_path=str(executable), args=LOOPBACK_ONLY_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await only_loopback(page, left_loopback)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{base}/console/sign-in")
        await page.get_by_label("Tenant API key or admin token").fill(gw.tenant_key)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/console/jobs")

        # Compare: one clip through two models, side by side.
        await page.goto(f"{base}/console/compare")
        await ready(page)
        await page.get_by_label("Video file").set_input_files(clips["bounce"].path)
        await page.get_by_label("fal-ai/thinksound", exact=True).check()
        await page.get_by_label("fal-ai/thinksound/audio", exact=True).check()
        await page.get_by_role("button", name="Run on each model").click()
        columns = page.locator("#compare-results section.column")
        await expect(columns).to_have_count(2, timeout=30_000)
        for model in ("fal-ai/thinksound", "fal-ai/thinksound/audio"):
            column = page.get_by_role("region", name=model, exact=True)
            await expect(column.locator('[data-status="succeeded"]')).to_be_visible(
                timeout=JOB_DEADLINE_MS
            )
            await expect(column.locator("audio")).to_have_count(1)
            await expect(column.locator("img")).to_have_count(1)
        await expect(
            page.get_by_role("region", name="fal-ai/thinksound", exact=True).locator("video")
        ).to_have_count(1)
        await accessible(page)
        await shot(page, "11-compare")

        # A video longer than Kling takes: its page lists the segments it ran as, each a link.
        long_clip = make_bouncing_square(
            tmp_path / "long.mp4", duration_s=21.0, width=64, height=48, fps=12
        )
        job = await gw.create(
            {"model": "kling-video-to-audio", "input": {"video_url": gw.emu.upload(long_clip.path)}}
        )
        done = await gw.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        await page.goto(f"{base}/console/jobs/{job['id']}")
        await ready(page)
        rows = page.locator("#segments tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.first.locator("a")).to_have_attribute(
            "href", f"/console/jobs/{done['segments'][0]['job_id']}"
        )
        await expect(page.locator("#result-video")).to_be_visible()
        await accessible(page)
        await shot(page, "12-segments")

        # Webhooks: an endpoint added (its secret shown once), its deliveries listed.
        await page.goto(f"{base}/console/webhooks")
        await ready(page)
        await page.get_by_label("URL").fill("http://127.0.0.1:9/hooks")
        await page.get_by_label("job.succeeded").check()
        await page.get_by_role("button", name="Add endpoint").click()
        await expect(page.locator(".secret-value")).to_contain_text("whsec_")
        await page.get_by_role("button", name="Ping http://127.0.0.1:9/hooks").click()
        await expect(page.locator("#status")).to_have_text("Ping queued.")
        await page.get_by_role("button", name="Deliveries to http://127.0.0.1:9/hooks").click()
        await expect(page.locator("#deliveries")).to_contain_text("ping")
        await accessible(page)
        await shot(page, "13-webhooks")

        # The operator's remaining pages draw, and are accessible.
        await page.goto(f"{base}/console/jobs")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{base}/console/sign-in")
        await page.get_by_label("Tenant API key or admin token").fill(ADMIN)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/console/admin/tenants")
        await page.goto(f"{base}/console/admin/prices")
        await ready(page)
        await expect(page.locator("tbody tr")).not_to_have_count(0)
        await page.get_by_label("Model (id or alias)").fill("thinksound")
        await page.get_by_label("Unit", exact=True).fill("compute_second")
        await page.get_by_label("USD per unit").fill("0.002")
        await page.get_by_role("button", name="Add price").click()
        await expect(page.locator("tbody")).to_contain_text("0.002")
        await accessible(page)
        await page.goto(f"{base}/console/admin/usage")
        await ready(page)
        await page.wait_for_selector("svg.chart rect.bar", timeout=30_000)
        await expect(page.locator("#usage")).to_contain_text("e2e")
        await accessible(page)
        await shot(page, "14-admin-usage")
        await browser.close()
    assert left_loopback == []
    assert errors == []
