"""Request-level limits and malformed requests (spec sections 5 and 6)."""

from __future__ import annotations

import pytest
from huaweicloudsdkworkspace.v2 import BatchInstallAgentReq, BatchInstallAgentRequest

from harness import expect_error, raw


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("limits", {"max_body_bytes": 2048})


def test_body_over_max_body_bytes_is_413(srv):
    c = srv.workspace()
    big = [f"d{i:030d}" for i in range(100)]  # ~3.5 KB of JSON, every id valid
    expect_error(lambda: c.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=big))),
                 413, "APIGW.0201")


@pytest.mark.parametrize("body", ["", "{not json", "[]", '{"desktop_ids": "d1"}', '{"other": 1}'])
def test_malformed_install_bodies_are_400(srv, body):
    r = raw("POST", srv, f"/v2/{srv.project_id}/desktops/agents", body=body, project_id=srv.project_id)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "WKS.0001" and r.json()["error_msg"], r.text
    assert r.headers.get("X-Request-Id")


def test_wrong_method_is_apigw_0101(srv):
    r = raw("DELETE", srv, f"/v2/{srv.project_id}/desktops/agents", project_id=srv.project_id)
    assert r.status_code == 404, r.text
    assert r.json()["error_code"] == "APIGW.0101"
    assert r.headers.get("X-Request-Id")
