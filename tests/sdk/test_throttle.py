"""Throttling per user and API: 429 APIGW.0308 with Retry-After.

Writes are tested through the SDK (urllib3 never retries a POST, so the SDK parses the
429 body). For a GET 429, the SDK's urllib3 Retry(total=0, status_forcelist=[429]) raises
before the body is read (spec section 10.3), so the GET side is checked with raw requests.
"""

from __future__ import annotations

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    JobActionsReq,
    ListDesktopsRequest,
    RunActionsOnWorkspaceJobRequest,
)

from harness import expect_error, raw

WRITES = 3
READS = 4


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("throttle", {"throttle": {"enabled": True, "writes_per_minute": WRITES,
                                                        "reads_per_minute": READS}})
    created = s.import_desktops(s.project_id, [
        {"computer_name": f"th-{i:02d}", "ip_address": f"192.0.2.{80 + i}", "os_type": "Linux"} for i in range(1, 6)
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    return s


def install(client, ids):
    return client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=ids)))


def test_fourth_install_is_throttled(srv):
    c = srv.workspace()
    jobs = [install(c, [srv.desktop_ids[i]]).job_id for i in range(WRITES)]
    assert len(set(jobs)) == WRITES
    e = expect_error(lambda: install(c, [srv.desktop_ids[3]]), 429, "APIGW.0308")
    assert e.error_msg
    assert e.body.get("error_code") == "APIGW.0308"
    retry_after = {k.lower(): v for k, v in e.headers.items()}.get("retry-after")
    assert retry_after and retry_after.isdigit() and 1 <= int(retry_after) <= 60, e.headers

    # raw: the same API again, to see the header on the wire
    r = raw("POST", srv, f"/v2/{srv.project_id}/desktops/agents", body={"desktop_ids": [srv.desktop_ids[3]]},
            project_id=srv.project_id)
    assert r.status_code == 429, r.text
    assert r.json()["error_code"] == "APIGW.0308" and r.json()["error_msg"]
    assert r.headers.get("Retry-After", "").isdigit() and int(r.headers["Retry-After"]) >= 1
    assert r.headers.get("X-Request-Id")

    # per API: another write API of the same user still has its own budget
    r = c.run_actions_on_workspace_job(RunActionsOnWorkspaceJobRequest(job_id=jobs[0],
                                                                       body=JobActionsReq(op_type="cancel")))
    assert r.status_code == 200

    # per user: another user's installs are not throttled by the first user's
    srv.create_user("second-admin", srv.project_id, "admin")
    key = srv.create_access_key("second-admin", srv.project_id)
    other = srv.workspace(ak=key["access_key"], sk=key["secret_key"])
    assert install(other, [srv.desktop_ids[4]]).status_code == 200


def test_reads_are_throttled_separately(srv):
    srv.create_user("reader", srv.project_id, "readonly")
    key = srv.create_access_key("reader", srv.project_id)
    path = f"/v2/{srv.project_id}/desktops"
    for _ in range(READS):
        r = raw("GET", srv, path, ak=key["access_key"], sk=key["secret_key"], project_id=srv.project_id)
        assert r.status_code == 200, r.text
    r = raw("GET", srv, path, ak=key["access_key"], sk=key["secret_key"], project_id=srv.project_id)
    assert r.status_code == 429, r.text
    assert r.json()["error_code"] == "APIGW.0308"
    assert r.headers.get("Retry-After", "").isdigit()
    assert r.headers.get("X-Request-Id")

    # Through the SDK a GET 429 surfaces as urllib3's retry error (no body, no request id).
    c = srv.workspace(ak=key["access_key"], sk=key["secret_key"])
    with pytest.raises(ClientRequestException) as info:
        c.list_desktops(ListDesktopsRequest())
    assert info.value.status_code == 429


def test_throttle_can_be_disabled(server_factory):
    s = server_factory("no-throttle", {"throttle": {"enabled": False, "writes_per_minute": 1, "reads_per_minute": 1}})
    ids_ = [d["desktop_id"] for d in s.import_desktops(s.project_id, [
        {"computer_name": f"nt-{i}", "ip_address": f"192.0.2.{90 + i}", "os_type": "Linux"} for i in range(3)])]
    c = s.workspace()
    for i in range(3):
        assert install(c, [ids_[i]]).status_code == 200
        assert c.list_desktops(ListDesktopsRequest()).total_count == 3
