"""The console end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): an admin signs in, creates a key with a budget; the key is used through the openai
SDK; the request shows in the usage view and moves the budget bar; the key signs in and sees only
its own; it is revoked and the SDK gets 401; a reply streams in the playground; the bundled local
model is loaded and unloaded. Screenshots at desktop and phone width are saved under the test's
tmp directory (printed), and axe-core finds no serious or critical violation on any view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server
from tests.ui.conftest import priced_config

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
LOCAL = "smollm2-135m-instruct"
MASTER = "console-test-master-key-0123456789abcdef"
PROVIDER_KEY = "sk-proj-console-provider-key-abcdefghijklmnop"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ui_upstream: FakeOpenAI) -> Iterator[RunningServer]:
    with run_server(tmp_path_factory.mktemp("ui-browser"), ui_sign_in_per_minute=1000, bundled_models="on",
                    master_key=MASTER, **priced_config(ui_upstream)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    refused: list[str] = []  # CSP refusals and script errors: the console must need no exception
    tab.on("console", lambda m: refused.append(m.text) if m.type == "error" and "Refused" in m.text else None)
    tab.on("pageerror", lambda exc: refused.append(str(exc)))
    tab.on("dialog", lambda d: d.accept())
    yield tab
    context.close()
    assert refused == []


def sign_in(page: Page, server: RunningServer, key: str) -> None:
    page.goto(server.url + "/ui")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-out")).to_be_visible()


def sign_out(page: Page) -> None:
    page.locator("#sign-out").click()
    expect(page.get_by_label("API key", exact=True)).to_be_visible()


def open_view(page: Page, name: str) -> None:
    page.goto(page.url.split("#")[0] + f"#{name}")
    expect(page.locator(f"#view[data-ready='{name}']")).to_be_attached()


def no_serious_violations(page: Page) -> None:
    page.evaluate(AXE.read_text())  # evaluated by the driver, not as a page script (the CSP allows none)
    result: dict[str, Any] = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
    assert serious == [], json.dumps(serious)


def budget_of(page: Page, key_name: str) -> float:
    row = page.locator("#keys-list tr", has_text=key_name)
    return float(row.get_by_role("progressbar").get_attribute("aria-valuenow") or "nan")


def test_the_console_end_to_end(server: RunningServer, page: Page, tmp_path: Path, sdk: Any,
                                ui_upstream: FakeOpenAI) -> None:
    shots = tmp_path / "screenshots"
    sign_in(page, server, server.admin_key)
    no_serious_violations(page)

    # an admin creates a team, then a key in it with a budget; the secret is shown once
    open_view(page, "teams")
    page.get_by_label("Name", exact=True).fill("research")
    page.get_by_label("Budget (USD)", exact=True).fill("10")
    page.get_by_role("button", name="Create team").click()
    expect(page.locator("tr", has_text="research")).to_contain_text("$10.00 monthly")
    open_view(page, "keys")
    page.get_by_label("Name", exact=True).fill("alice")
    page.get_by_label("Team", exact=True).fill("research")
    page.get_by_label("Budget (USD)", exact=True).fill("1")
    page.get_by_label("Budget period", exact=True).select_option("daily")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret-value").inner_text()
    assert secret.startswith("sk-")
    expect(page.locator("#keys-list tr", has_text="alice")).to_contain_text("$0.00 of $1.00 (daily)")
    assert budget_of(page, "alice") == 0
    expect(page.get_by_label("Name", exact=True)).to_have_value("")  # the form is emptied for the next key
    no_serious_violations(page)
    page.screenshot(path=shots / "keys-desktop.png", full_page=True)

    # the key is used through the openai SDK, against a priced model
    client = sdk(server.v1, secret)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert answer.usage is not None and answer.usage.total_tokens > 0
    cost = answer.usage.total_tokens * 0.01  # one cent a token

    # the request appears in the usage view (the rows are flushed in batches: reload until then)
    deadline = time.monotonic() + 10
    while True:
        open_view(page, "usage")
        totals = page.locator("#usage-totals").inner_text()
        if totals.startswith("Total: 1 requests") or time.monotonic() > deadline:
            break
        page.reload()
    assert totals.startswith(f"Total: 1 requests, {answer.usage.total_tokens} tokens"), totals
    # per model (the default): error rate and p50/p95 latency, from the rollups' histogram
    headers = page.locator("#usage-out thead th").all_inner_texts()
    assert headers[:1] + headers[4:7] == ["Model", "Error rate", "p50 latency", "p95 latency"], headers
    cells = page.locator("#usage-out tbody tr", has_text="m").first.locator("td").all_inner_texts()
    assert cells[4] == "0.0%" and cells[5].endswith(" ms") and cells[6].endswith(" ms"), cells
    page.get_by_label("Table", exact=True).select_option("session")  # the raw rows: no session named
    expect(page.locator("#usage-out tbody tr")).to_have_count(1)
    expect(page.locator("#usage-out tbody tr")).to_contain_text("(none)")
    page.get_by_label("Table", exact=True).select_option("key")
    expect(page.locator("#usage-out tbody tr")).to_have_count(1)
    expect(page.locator("#usage-out tbody tr")).to_contain_text("alice")
    page.get_by_label("Table", exact=True).select_option("team")
    expect(page.locator("#usage-out tbody tr")).to_have_count(1)
    expect(page.locator("#usage-out tbody tr")).to_contain_text("research")
    page.get_by_label("Chart", exact=True).select_option("requests")
    bars = page.locator(".chart rect")
    expect(bars).to_have_count(1)
    assert float(bars.first.get_attribute("data-value") or 0) == 1
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    csv = Path(download.value.path()).read_text().splitlines()
    head, first = csv[0].split(","), csv[1].split(",")
    assert head[:3] == ["team_id", "team_name", "requests"] and "error_rate" in head
    assert first[1:3] == ["research", "1"], csv
    no_serious_violations(page)
    page.screenshot(path=shots / "usage-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=shots / "usage-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)

    # ... and moves its budget bar
    open_view(page, "keys")
    assert budget_of(page, "alice") == pytest.approx(cost)
    expect(page.locator("#keys-list tr", has_text="alice")).to_contain_text("research")

    # its limits change through the same admin API (and land in the audit log)
    page.get_by_role("button", name="Edit alice").click()
    edit = page.locator("form", has=page.get_by_role("button", name="Save"))
    edit.get_by_label("Requests per minute", exact=True).fill("60")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#keys-list tr", has_text="alice").locator("td").nth(6)).to_have_text("60")
    with server.http(server.admin_key) as http:
        actions = [e["action"] for e in http.get("/admin/audit", params={"action": "key."}).json()["data"]]
    assert actions[:2] == ["key.update", "key.create"]
    sign_out(page)

    # the key signs in and sees only its own: no admin views, its budget and models
    sign_in(page, server, secret)
    assert page.locator("#nav a").all_inner_texts() == ["My key", "My usage", "Playground"]
    expect(page.locator("#my-budget")).to_contain_text(f"${cost:.2f} of $1.00 (daily)")
    expect(page.locator("#my-models li").first).to_have_text("m")
    no_serious_violations(page)
    page.set_viewport_size(PHONE)
    page.screenshot(path=shots / "my-key-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)
    open_view(page, "usage")
    expect(page.locator("#usage-totals")).to_contain_text("Total: 1 requests")
    assert page.get_by_label("Table", exact=True).locator("option").all_inner_texts() == [
        "per model", "per session"]  # no other keys, no teams
    status = page.evaluate("fetch('/admin/keys').then(r => r.status)")  # its cookie is no admin's
    assert status == 403
    sign_out(page)

    # the admin revokes it: the SDK gets 401
    sign_in(page, server, server.admin_key)
    open_view(page, "keys")
    page.get_by_role("button", name="Revoke alice").click()
    expect(page.locator("#keys-list tr", has_text="alice")).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])

    # a reply streams in the playground
    open_view(page, "playground")
    page.get_by_label("Model", exact=True).select_option("m")
    page.get_by_label("Message", exact=True).fill("Say hello")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#playground-reply[data-done='true']")).to_be_attached()
    assert page.locator("#playground-reply").inner_text().strip() == "echo: Say hello"  # the fake echoes
    assert json.loads(page.locator("#playground-request").inner_text())["stream"] is True
    assert page.locator("#playground-response").inner_text().rstrip().endswith("data: [DONE]")
    # the call as code runs as shown (with a real key in place of the placeholder)
    for kind in ("curl", "openai", "anthropic"):
        page.get_by_label("Language", exact=True).select_option(kind)
        code = page.locator("#playground-code").inner_text()
        assert "sk-sy-..." in code or "$SWITCHYARD_API_KEY" in code
        if kind == "curl":
            ran = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "SWITCHYARD_API_KEY": server.admin_key})
            assert "data: [DONE]" in ran.stdout, ran.stderr
        else:
            ran = subprocess.run([sys.executable, "-c", code.replace("sk-sy-...", server.admin_key)],
                                 capture_output=True, text=True, timeout=60)
            assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    no_serious_violations(page)
    page.screenshot(path=shots / "playground-desktop.png", full_page=True)

    # ... and through the Responses API: output_text deltas, the second turn chained to the first
    page.get_by_label("Responses", exact=True).check()
    assert page.get_by_label("Language", exact=True).locator("option").all_inner_texts() == [
        "curl", "openai SDK (Python)"]
    turns = []
    for text in ("first turn", "second turn"):
        page.get_by_label("Message", exact=True).fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#playground-reply[data-done='true']")).to_be_attached()
        assert page.locator("#playground-reply").inner_text().strip() == f"echo: {text}"
        stream = page.locator("#playground-response").inner_text()
        assert "event: response.output_text.delta" in stream
        completed = [json.loads(line[5:]) for line in stream.splitlines()
                     if line.startswith("data:") and '"response.completed"' in line]
        turns.append((json.loads(page.locator("#playground-request").inner_text()), completed[0]["response"]))
    (first_request, first), (second_request, second) = turns
    assert first_request["input"] == "first turn" and first_request["stream"] is True
    assert "previous_response_id" not in first_request
    assert second_request["previous_response_id"] == first["id"] == second["previous_response_id"]
    expect(page.locator("#playground-chain")).to_have_text(f"Continues response {second['id']}.")
    for kind in ("curl", "openai"):
        page.get_by_label("Language", exact=True).select_option(kind)
        code = page.locator("#playground-code").inner_text()
        assert "/v1/responses" in code if kind == "curl" else "client.responses.create(" in code
        assert first["id"] in code  # the call as code chains too
        if kind == "curl":
            ran = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "SWITCHYARD_API_KEY": server.admin_key})
            assert "response.output_text.delta" in ran.stdout and "echo: second turn" in ran.stdout.replace(
                '"delta":"', "").replace('"', ""), ran.stderr
        else:
            ran = subprocess.run([sys.executable, "-c", code.replace("sk-sy-...", server.admin_key)],
                                 capture_output=True, text=True, timeout=60)
            assert ran.returncode == 0 and ran.stdout.strip() == "echo: second turn", ran.stderr
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#playground-chain")).to_have_text("A new conversation.")
    no_serious_violations(page)
    page.set_viewport_size(PHONE)
    page.screenshot(path=shots / "playground-responses-phone.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.set_viewport_size(DESKTOP)

    # the bundled local model is loaded and unloaded
    open_view(page, "models")
    row = page.locator("tr", has_text=LOCAL)
    expect(row.locator("td").nth(2)).to_have_text("unloaded")
    page.get_by_role("button", name=f"Load {LOCAL}").click()
    expect(page.get_by_role("button", name=f"Unload {LOCAL}")).to_be_visible(timeout=60_000)
    expect(page.locator("tr", has_text=LOCAL).locator("td").nth(2)).to_have_text("loaded")
    no_serious_violations(page)
    page.screenshot(path=shots / "models-desktop.png", full_page=True)
    page.get_by_role("button", name=f"Unload {LOCAL}").click()
    expect(page.get_by_role("button", name=f"Load {LOCAL}")).to_be_visible(timeout=30_000)
    expect(page.locator("tr", has_text=LOCAL).locator("td").nth(2)).to_have_text("unloaded")

    # a model stored over the admin API serves at once; disabled, it does not
    page.get_by_role("textbox", name="Alias").fill("stored-m")
    page.get_by_label("Provider", exact=True).fill("up")
    page.get_by_label("Upstream model", exact=True).fill("gpt-4o-mini")
    page.get_by_role("button", name="Add model").click()
    expect(page.get_by_role("button", name="Disable stored-m")).to_be_visible()
    admin = sdk(server.v1, server.admin_key)
    assert "stored-m" in {m.id for m in admin.models.list()}
    assert admin.chat.completions.create(model="stored-m", messages=[{"role": "user", "content": "x"}]).choices
    page.get_by_role("button", name="Disable stored-m").click()
    expect(page.get_by_role("button", name="Enable stored-m")).to_be_visible()
    assert "stored-m" not in {m.id for m in admin.models.list()}

    # its other fields change through PATCH /admin/models, naming only what changed (and audited)
    page.get_by_role("button", name="Edit stored-m").click()
    edit = page.get_by_role("form", name="Edit stored-m")
    edit.get_by_label("Upstream model", exact=True).fill("gpt-4o")
    edit.get_by_label("Provider", exact=True).select_option("up")
    edit.get_by_label("Base URL", exact=True).fill(ui_upstream.base_url)
    edit.get_by_label("Input USD per 1M tokens", exact=True).fill("2")
    edit.get_by_label("Output USD per 1M tokens", exact=True).fill("4.5")
    edit.get_by_label("Max concurrent requests", exact=True).fill("3")
    edit.get_by_label("Timeout (seconds)", exact=True).fill("30")
    edit.get_by_label("Requests per minute", exact=True).fill("100")
    edit.get_by_label("Tools", exact=True).select_option("false")
    no_serious_violations(page)
    edit.get_by_role("button", name="Save model").click()
    expect(edit).to_have_count(0)
    expect(page.locator("#stored-models tr", has_text="stored-m")).to_contain_text(
        "max 3 at once, timeout 30s, tools: no")
    with server.http(server.admin_key) as http:
        stored = http.get("/admin/models/stored-m").json()
        [update] = http.get("/admin/audit", params={"action": "model.update", "limit": 1}).json()["data"]
    assert (stored["model"], stored["input_cost_per_1m"], stored["output_cost_per_1m"]) == ("gpt-4o", 2, 4.5)
    assert stored["base_url"] and stored["rate_limits"]["per_minute"] == 100
    assert stored["provider_settings"] == {"max_concurrent": 3, "timeout": 30, "capabilities": {"tools": False}}
    assert update["details"] == {"model": "gpt-4o", "base_url": ui_upstream.base_url, "input_cost_per_1m": 2,
                                 "output_cost_per_1m": 4.5, "rate_limits": {"per_minute": 100},
                                 "provider_settings": {"max_concurrent": 3, "timeout": 30,
                                                       "capabilities": {"tools": False}}}
    # a value the admin API refuses is shown in the form, and nothing changes
    page.get_by_role("button", name="Edit stored-m").click()
    edit.get_by_label("Base URL", exact=True).fill("ftp://nowhere.example")
    edit.get_by_role("button", name="Save model").click()
    expect(edit.get_by_role("alert")).to_contain_text("base_url")
    edit.get_by_role("button", name="Cancel").click()
    expect(edit).to_have_count(0)
    with server.http(server.admin_key) as http:
        assert http.get("/admin/models/stored-m").json() == stored
    page.get_by_role("button", name="Enable stored-m").click()
    expect(page.get_by_role("button", name="Disable stored-m")).to_be_visible()
    assert admin.chat.completions.create(model="stored-m", messages=[{"role": "user", "content": "x"}]).model

    # a vault credential, checked live against the upstream; only its display form is shown
    page.get_by_label("Credential name", exact=True).fill("up-cred")
    page.get_by_label("Provider API key", exact=True).fill(PROVIDER_KEY)
    page.get_by_label("Base URL", exact=True).fill(ui_upstream.base_url)
    page.get_by_role("button", name="Add credential").click()
    row = page.locator("#credentials tr", has_text="up-cred")
    expect(row.locator("td").nth(4)).to_have_text("ok")  # the live check passed
    assert PROVIDER_KEY not in page.content() and PROVIDER_KEY[-4:] in row.inner_text()
    no_serious_violations(page)

    # checked again, deactivated, activated and removed: each through /admin/credentials, each audited
    page.get_by_role("button", name="Check up-cred").click()
    expect(page.locator("#credential-outcome")).to_have_text("up-cred: the check passed.")
    page.get_by_role("button", name="Deactivate up-cred").click()
    expect(row.locator("td").nth(3)).to_have_text("no")
    page.get_by_role("button", name="Activate up-cred").click()
    expect(row.locator("td").nth(3)).to_have_text("yes")
    assert PROVIDER_KEY not in page.content()
    page.get_by_role("button", name="Remove up-cred").click()  # (the confirm dialog is accepted)
    expect(row).to_have_count(0)
    with server.http(server.admin_key) as http:
        audited = http.get("/admin/audit", params={"action": "credential."}).json()["data"]
        assert http.get("/admin/credentials/up-cred").status_code == 404
    assert [e["action"] for e in audited][:5] == ["credential.remove", "credential.activate",
                                                  "credential.deactivate", "credential.check", "credential.add"]
    assert PROVIDER_KEY not in json.dumps(audited)
    print(f"screenshots: {shots}")
    assert {p.name for p in shots.iterdir()} >= {"keys-desktop.png", "usage-desktop.png", "usage-phone.png",
                                                 "my-key-phone.png", "playground-desktop.png", "models-desktop.png",
                                                 "playground-responses-phone.png"}


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_every_view_passes_axe_at_phone_width(server: RunningServer, browser: Browser, tmp_path: Path,
                                              scheme: str) -> None:
    """Contrast and labels in the system's colour scheme, at a phone's width; no view scrolls sideways
    as a whole (wide tables scroll inside their own box)."""
    context = browser.new_context(viewport=PHONE, color_scheme=scheme)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        sign_in(page, server, server.admin_key)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(18, 20, 23)" if scheme == "dark" else "rgb(255, 255, 255)")
        for view in ("usage", "keys", "teams", "models", "playground"):
            open_view(page, view)
            no_serious_violations(page)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), view
            page.screenshot(path=tmp_path / f"{view}-{scheme}-phone.png", full_page=True)
        page.goto(server.url + "/ui#keys")
        page.reload()  # a fresh document: the first Tab stop is the skip link
        expect(page.locator("#view[data-ready='keys']")).to_be_attached()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Usage"  # then the sections
    finally:
        context.close()
