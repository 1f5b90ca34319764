"""AK/SK authentication and authorisation failures, as the unchanged SDK reports them."""

from __future__ import annotations

import datetime
import time

import pytest
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListAgentsInstallConditionRequest,
    ListDesktopsRequest,
    ShowJobRequest,
)

from harness import AUTH_PREFIX, expect_error, raw, wait_for

INSTALL_ACTION = "workspace:desktops:batchInstallAgents"


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("auth")
    created = s.import_desktops(s.project_id, [
        {"computer_name": "auth-01", "ip_address": "192.0.2.101", "os_type": "Linux"},
        {"computer_name": "auth-02", "ip_address": "192.0.2.102", "os_type": "Windows"},
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    return s


def list_desktops(client):
    return lambda: client.list_desktops(ListDesktopsRequest())


def install(client, ids):
    return lambda: client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=ids)))


def test_correct_key_works(srv):
    r = srv.workspace().list_desktops(ListDesktopsRequest())
    assert r.status_code == 200 and r.total_count == 2


def test_wrong_secret_key(srv):
    key = srv.create_access_key(srv.bootstrap["user_name"], srv.project_id)
    bad = srv.workspace(ak=key["access_key"], sk=key["secret_key"] + "x")
    expect_error(list_desktops(bad), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    expect_error(install(bad, srv.desktop_ids[:1]), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")


def test_unknown_access_key(srv):
    client = srv.workspace(ak="AKNOSUCHKEY000000000", sk="whatever")
    expect_error(list_desktops(client), 401, "APIGW.0301", AUTH_PREFIX + "Get secretKey failed")


def test_stale_sdk_date(srv):
    key = srv.create_access_key(srv.bootstrap["user_name"], srv.project_id)
    client = srv.workspace(ak=key["access_key"], sk=key["secret_key"])
    # The signer honours a preset X-Sdk-Date; the signature is valid but the date is years off.
    client.preset_headers = {"X-Sdk-Date": "20200101T000000Z"}
    expect_error(list_desktops(client), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    client.preset_headers = {}
    assert client.list_desktops(ListDesktopsRequest()).total_count == 2


@pytest.mark.parametrize("minutes", [14, -14, 16, -16])
def test_clock_skew_limit_is_15_minutes(srv, minutes):
    client = srv.workspace()
    then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=minutes)
    client.preset_headers = {"X-Sdk-Date": then.strftime("%Y%m%dT%H%M%SZ")}
    if abs(minutes) < 15:
        assert client.list_desktops(ListDesktopsRequest()).total_count == 2
    else:
        expect_error(list_desktops(client), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")


def test_key_locked_after_five_bad_signatures(srv):
    key = srv.create_access_key(srv.bootstrap["user_name"], srv.project_id)
    good = srv.workspace(ak=key["access_key"], sk=key["secret_key"])
    bad = srv.workspace(ak=key["access_key"], sk="not-the-secret-key")
    assert good.list_desktops(ListDesktopsRequest()).total_count == 2
    for _ in range(5):
        expect_error(list_desktops(bad), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    locked = AUTH_PREFIX + "AK access failed to reach the limit,forbidden"
    expect_error(list_desktops(good), 401, "APIGW.0301", locked)
    expect_error(install(good, srv.desktop_ids[:1]), 401, "APIGW.0301", locked)
    # other keys are unaffected
    assert srv.workspace().list_desktops(ListDesktopsRequest()).total_count == 2


def test_lockout_counts_consecutive_failures_only(srv):
    key = srv.create_access_key(srv.bootstrap["user_name"], srv.project_id)
    good = srv.workspace(ak=key["access_key"], sk=key["secret_key"])
    bad = srv.workspace(ak=key["access_key"], sk="wrong")
    for _ in range(4):
        expect_error(list_desktops(bad), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    assert good.list_desktops(ListDesktopsRequest()).total_count == 2  # resets the count
    for _ in range(4):
        expect_error(list_desktops(bad), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    assert good.list_desktops(ListDesktopsRequest()).total_count == 2


def test_lockout_settings_and_expiry(server_factory):
    s = server_factory("lockout", {"auth": {"lockout_failures": 3, "lockout_secs": 2}})
    good = s.workspace()
    bad = s.workspace(sk="wrong")
    for _ in range(3):
        expect_error(list_desktops(bad), 401, "APIGW.0301", AUTH_PREFIX + "verify aksk signature fail")
    locked_at = time.monotonic()
    expect_error(list_desktops(good), 401, "APIGW.0301",
                 AUTH_PREFIX + "AK access failed to reach the limit,forbidden")

    def attempt():
        try:
            return good.list_desktops(ListDesktopsRequest())
        except Exception:  # still locked
            return None

    r = wait_for(attempt, lambda x: x is not None, timeout=10, what="the lock to expire", interval=0.25)
    assert r.total_count == 0
    assert time.monotonic() - locked_at >= 1.5, "the lock ended before lockout_secs"


def test_readonly_user_cannot_install(srv):
    user = srv.create_user("auditor", srv.project_id, "readonly")
    assert user["role"] == "readonly" and user["project_id"] == srv.project_id
    key = srv.create_access_key("auditor", srv.project_id)
    ro = srv.workspace(ak=key["access_key"], sk=key["secret_key"])

    # reads are allowed
    assert ro.list_desktops(ListDesktopsRequest()).total_count == 2
    assert ro.list_agents_install_condition(ListAgentsInstallConditionRequest()).total_count == 2

    e = expect_error(install(ro, srv.desktop_ids), 403, "WKS.0403")
    assert e.encoded_auth_msg, e
    decoded = srv.decode(e.encoded_auth_msg)
    assert decoded["action"] == INSTALL_ACTION, decoded
    assert decoded["user_name"] == "auditor", decoded
    assert decoded["project_id"] == srv.project_id, decoded
    assert "deny" in str(decoded["decision"]).lower(), decoded
    assert decoded["api"] == "BatchInstallAgent", decoded
    assert decoded.get("reason"), decoded


def test_another_projects_path_is_forbidden(srv):
    other = srv.create_project("cn-east-3")
    other_ids = [d["desktop_id"] for d in srv.import_desktops(other["project_id"], [
        {"computer_name": "east-01", "ip_address": "198.51.100.50", "os_type": "Linux"}])]
    # The bootstrap key belongs to the first project; the client puts the other project in
    # the path (and in X-Project-Id), signing correctly.
    client = srv.workspace(project_id=other["project_id"])
    for call in (list_desktops(client), install(client, other_ids),
                 lambda: client.show_job(ShowJobRequest(job_id="anything"))):
        e = expect_error(call, 403, "WKS.0403")
        assert e.encoded_auth_msg, e
        decoded = srv.decode(e.encoded_auth_msg)
        assert decoded["project_id"] in (other["project_id"], srv.project_id), decoded

    e = expect_error(install(client, other_ids), 403, "WKS.0403")
    assert srv.decode(e.encoded_auth_msg)["action"] == INSTALL_ACTION


def test_raw_unauthenticated_requests(srv):
    r = raw("GET", srv, f"/v2/{srv.project_id}/desktops", sign=False)
    assert r.status_code == 401, r.text
    assert r.json()["error_code"] == "APIGW.0301"
    assert r.json()["error_msg"] == AUTH_PREFIX + "x-auth-token not found"
    assert r.headers.get("X-Request-Id")

    r = raw("GET", srv, f"/v2/{srv.project_id}/desktops", sign=False,
            headers={"Authorization": "SDK-HMAC-SHA256 nonsense"})
    assert r.status_code == 401, r.text
    assert r.json()["error_code"] == "APIGW.0301" and r.json()["error_msg"].startswith(AUTH_PREFIX)

    r = raw("GET", srv, f"/v2/{srv.project_id}/desktops", sign=False, headers={"X-Auth-Token": "garbage"})
    assert r.status_code == 401, r.text
    assert r.json()["error_code"] == "APIGW.0301"
    assert r.json()["error_msg"] == AUTH_PREFIX + "decrypt token fail"
    assert r.headers.get("X-Request-Id")
