"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real server with three real guests.

As an operator would: sign in; see the three desktops come online; select all of them
and install the agent; watch the job reach SUCCESS on its page, live, without reloading;
open a desktop and see its metric charts; as a readonly user, find no control that
changes anything and have a forged install refused; sign out, after which the old
session cookie no longer works. Elements are found by role and label, as a person (or a
screen reader) finds them. A screenshot of every page is kept in
``target/console-screenshots/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness import Guest, wait_for

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("DESKFLEET_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "target" / "console-screenshots"
N = 3
HOSTNAMES = [f"console-desk-{i}" for i in range(1, N + 1)]
CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100, "metrics_min_interval_ms": 0},
    # A minute of metrics is written as soon as it has ended.
    "metric_data": {"flush_interval_ms": 100, "minute_grace_secs": 0},
    # The job page polls once a second: the per-user read limit is not what is tested.
    "throttle": {"enabled": False},
}
ONLINE_DEADLINE_S = 30
INSTALL_DEADLINE_S = 90
# A desktop's first minute of metrics is written once that minute has ended.
METRICS_DEADLINE_S = 100
VIEWER = ("console-viewer", "viewer-password-7")


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def reload_until(page, check, timeout: float, what: str) -> None:
    """Reloads a server-rendered page until ``check(page)`` holds."""
    def attempt():
        page.reload()
        return check(page)
    wait_for(attempt, bool, timeout=timeout, what=what, interval=0.5)


class Console:
    pass


@pytest.fixture(scope="module")
def console(module_server_factory, tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: scripts/sdk-tests.sh installs Debian's chromium")
    c = Console()
    c.server = s = module_server_factory("console", CONFIG)
    s.create_user(VIEWER[0], s.project_id, "readonly", password=VIEWER[1])
    token = s.create_enrollment_token()["enrollment_token"]
    states = tmp_path_factory.mktemp("console-guests")
    c.guests = []
    pw = playwright_api.sync_playwright().start()
    # Root (CI) cannot use Chromium's sandbox; elsewhere it stays on.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        for i, name in enumerate(HOSTNAMES, start=1):
            c.guests.append(Guest(s, token, states / f"state-{i}", name).start())
        # The server's own CA is not the browser's: the certificate is checked by the other
        # tests (test_tls.py); here it is accepted as is.
        c.context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 800})
        c.page = c.context.new_page()
        c.browser = browser
        yield c
    finally:
        browser.close()
        pw.stop()
        for g in c.guests:
            g.stop()


def sign_in(page, endpoint: str, user: str, password: str) -> None:
    page.goto(f"{endpoint}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_see_the_desktops_come_online(console):
    s, page = console.server, console.page
    page.goto(f"{s.endpoint}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "01-sign-in")
    page.get_by_label("User name").fill(s.bootstrap["user_name"])
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("password is wrong")
    # With the keyboard only: type, Tab to the next field, Enter submits.
    page.get_by_label("User name").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(s.bootstrap["password"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="API reference (OpenAPI)")).to_have_attribute("href", "/openapi.json")
    online = page.get_by_role("link", name=re.compile(r"^\d+ online$"))
    reload_until(page, lambda p: online.inner_text().split()[0] == str(N), ONLINE_DEADLINE_S,
                 f"{N} desktops online on the overview")
    shot(page, "02-overview")
    online.click()
    expect(page.get_by_role("heading", name="Desktops")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text(f"{N} desktops match")
    for name in HOSTNAMES:
        expect(page.get_by_role("link", name=name)).to_be_visible()
    # Search by name narrows the table, in the database.
    page.get_by_label("Search name or address").fill("desk-2")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("status").first).to_contain_text("1 desktops match")
    expect(page.get_by_role("link", name="console-desk-2")).to_be_visible()
    shot(page, "03-desktops-filtered")


def test_install_on_all_and_watch_the_job_succeed_live(console):
    s, page = console.server, console.page
    page.goto(f"{s.endpoint}/console/desktops")
    page.get_by_role("checkbox", name="Select all desktops on this page").check()
    for name in HOSTNAMES:
        expect(page.get_by_role("checkbox", name=f"Select {name}")).to_be_checked()
    shot(page, "04-desktops-selected")
    page.get_by_role("button", name="Install on selected").click()
    expect(page.get_by_role("heading", name="Install the agent")).to_be_visible()
    expect(page.get_by_text(f"{N} selected desktops")).to_be_visible()
    expect(page.get_by_label("Version")).to_be_visible()
    page.get_by_label(re.compile("^At most this many at once")).fill("2")
    shot(page, "05-install-confirm")
    page.get_by_role("button", name="Confirm install").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Job "))).to_be_visible()
    job_id = page.get_by_role("heading", name=re.compile(r"^Job ")).inner_text().split()[1]
    # From here on the page must not be reloaded: the script moves the bars.
    page.evaluate("window.__sameDocument = true")
    status = page.locator(f'[data-job-status="{job_id}"]')
    expect(status).to_have_text("SUCCESS", timeout=INSTALL_DEADLINE_S * 1000)
    expect(page.get_by_role("progressbar", name=f"Progress of job {job_id}")).to_have_attribute("value", "100")
    expect(page.get_by_role("cell", name="SUCCESS")).to_have_count(N)
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    expect(page.locator(f'[data-job-ended="{job_id}"]')).to_contain_text("UTC")
    expect(page.get_by_text(f"{N} succeeded, 0 failed, 0 running, 0 waiting")).to_be_visible()
    shot(page, "06-job-success")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("row", name=re.compile(job_id))).to_contain_text("SUCCESS")
    shot(page, "07-jobs")
    console.job_id = job_id


def test_the_audit_trail_shows_the_install_and_the_end_of_its_job(console):
    s, page = console.server, console.page
    page.goto(f"{s.endpoint}/console/jobs/{console.job_id}")
    page.get_by_role("link", name="Traces of this job").click()
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    # The job's end, recorded by the server when its last desktop finished.
    end = page.get_by_role("row", name=re.compile("batchInstallCesAgent.*SystemAction"))
    expect(end).to_have_count(1)
    expect(end).to_contain_text("deskfleet")
    expect(end).to_contain_text("normal")
    # The form that asked for it, as a console action of the signed-in user.
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_label("Operation (trace name)").fill("batchInstallCesAgent")
    page.get_by_role("button", name="Show traces").click()
    asked = page.get_by_role("row", name=re.compile("batchInstallCesAgent.*ConsoleAction"))
    expect(asked).to_have_count(1)
    expect(asked).to_contain_text(s.bootstrap["user_name"])
    expect(asked).to_contain_text("200")
    shot(page, "17-audit")


def test_a_desktop_shows_its_agent_history_and_metric_charts(console):
    s, page = console.server, console.page
    page.goto(f"{s.endpoint}/console/desktops")
    page.get_by_role("link", name=HOSTNAMES[0]).click()
    expect(page.get_by_role("heading", name=HOSTNAMES[0])).to_be_visible()
    expect(page.get_by_role("heading", name="Install history")).to_be_visible()
    expect(page.get_by_role("table", name="Work on this desktop, newest first")).to_contain_text("SUCCESS")
    cpu = page.get_by_role("img", name=re.compile(r"^CPU usage: last "))
    reload_until(page, lambda p: cpu.count() == 1, METRICS_DEADLINE_S, "the CPU chart to have data")
    for title in ("Memory used", "Network received"):
        expect(page.get_by_role("img", name=re.compile(f"^{title}: last "))).to_be_visible()
    shot(page, "08-desktop")


def test_a_readonly_user_has_no_controls_and_a_forged_write_is_refused(console):
    s = console.server
    context = console.browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 800})
    try:
        page = context.new_page()
        sign_in(page, s.endpoint, *VIEWER)
        expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        page.get_by_role("link", name="Desktops", exact=True).click()
        expect(page.get_by_role("link", name=HOSTNAMES[0])).to_be_visible()
        expect(page.get_by_role("button", name=re.compile("^Install"))).to_have_count(0)
        expect(page.get_by_role("checkbox")).to_have_count(0)
        shot(page, "09-readonly-desktops")
        page.goto(f"{s.endpoint}/console/jobs/{console.job_id}")
        expect(page.get_by_role("heading", name=f"Job {console.job_id}")).to_be_visible()
        expect(page.get_by_role("button", name=re.compile("^(Retry|Cancel)"))).to_have_count(0)
        # The same POST the admin's confirm button sends, with the viewer's own session
        # and token: the server refuses it.
        csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
        ids = [g for g in page.get_by_role("link", name=HOSTNAMES[0]).get_attribute("href").split("/") if g]
        r = page.request.post(f"{s.endpoint}/console/install",
                              form={"csrf_token": csrf, "scope": "selected", "desktop_id": ids[-1]})
        assert r.status == 403, r.text()
        assert "WKS.0403" in r.text() and "role readonly does not grant" in r.text(), r.text()
        page.goto(f"{s.endpoint}/console/install?scope=selected&desktop_id={ids[-1]}")
        expect(page.get_by_role("alert")).to_contain_text("WKS.0403")
        shot(page, "10-readonly-refused")
    finally:
        context.close()


def test_upgrade_and_rollback_answer_desktop_by_desktop(console):
    s, page = console.server, console.page
    page.get_by_role("link", name="Packages", exact=True).click()
    versions = page.get_by_role("table", name=re.compile("^Versions of deskfleet-monitor"))
    expect(versions).to_contain_text("yes")
    shot(page, "12-packages")
    page.goto(f"{s.endpoint}/console/desktops")
    page.get_by_role("checkbox", name=f"Select {HOSTNAMES[1]}").check()
    page.get_by_role("button", name="Upgrade selected").click()
    expect(page.get_by_role("heading", name="Upgrade the agent")).to_be_visible()
    shot(page, "13-upgrade-confirm")
    page.get_by_role("button", name="Confirm upgrade").click()
    expect(page.get_by_role("status")).to_contain_text("1 of 1 desktops accepted")
    page.get_by_role("link", name="Follow the job").click()
    job_status = page.locator("[data-job-status]")
    expect(job_status).to_have_text("SUCCESS", timeout=INSTALL_DEADLINE_S * 1000)
    # That upgrade kept the version: a rollback is refused, in words, with its code.
    page.goto(f"{s.endpoint}/console/desktops")
    page.get_by_role("checkbox", name=f"Select {HOSTNAMES[1]}").check()
    page.get_by_role("checkbox", name=f"Select {HOSTNAMES[2]}").check()
    page.get_by_role("button", name="Roll back selected").click()
    page.get_by_role("button", name="Confirm rollback").click()
    expect(page.get_by_role("status")).to_contain_text("0 of 2 desktops accepted")
    answers = page.get_by_role("table", name="Rollback, desktop by desktop")
    expect(answers.get_by_role("row", name=re.compile(HOSTNAMES[1]))).to_contain_text("invocationmgr.0008")
    expect(answers.get_by_role("row", name=re.compile(HOSTNAMES[2]))).to_contain_text("never upgraded")
    shot(page, "14-rollback-refused")


def test_enrollment_tokens_and_users_for_admins(console):
    s, page = console.server, console.page
    console.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=s.endpoint)
    page.get_by_role("link", name="Enrollment", exact=True).click()
    page.get_by_label("Valid for (hours)").fill("1")
    page.get_by_role("button", name="Create token").click()
    command = page.get_by_label(re.compile("^Start a guest with it"))
    expect(command).to_contain_text("deskfleet-guest --server https://")
    token = page.get_by_label("Token", exact=True).input_value()
    assert token.startswith("DFE1") and token in command.input_value()
    page.get_by_role("button", name="Copy the command line").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == command.input_value()
    shot(page, "15-enrollment-token")
    page.get_by_role("button", name="Revoke this token").click()
    expect(page.get_by_role("status")).to_contain_text("The token is revoked")

    page.get_by_role("link", name="Users", exact=True).click()
    page.get_by_label("User name").fill("console-auditor")
    page.get_by_label("Role on this project").select_option("readonly")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status")).to_contain_text("User console-auditor created with the role readonly")
    assert len(page.get_by_label("Its password, shown only now").input_value()) >= 16
    row = page.get_by_role("row", name=re.compile("console-auditor"))
    expect(row).to_contain_text("enabled")
    row.get_by_role("button", name="New access key for console-auditor").click()
    expect(page.get_by_label("Secret key (SK)")).not_to_be_empty()
    shot(page, "16-users")


def test_sign_out_ends_the_session(console):
    s, page = console.server, console.page
    page.goto(f"{s.endpoint}/console/")
    cookies = console.context.cookies()
    assert any(c["name"] == "__Host-deskfleet-console" and c["httpOnly"] and c["secure"]
               and c["sameSite"] == "Strict" for c in cookies), cookies
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("You have signed out")
    shot(page, "11-signed-out")
    # The cookie as it was before sign-out, in a fresh browser: it no longer works.
    replay = console.browser.new_context(ignore_https_errors=True)
    try:
        replay.add_cookies(cookies)
        p = replay.new_page()
        p.goto(f"{s.endpoint}/console/desktops")
        expect(p.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        replay.close()
