"""Values that need percent-encoding. The SDK signs the percent-encoded query and path
(spec section 7.2: spaces as %20, '/' as %2F, UTF-8 bytes encoded, keys sorted); the server
must verify that canonical form and then work on the decoded values."""

from __future__ import annotations

import pytest
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListAgentsInstallConditionRequest,
    ListDesktopsDetailRequest,
    ListDesktopsRequest,
    ShowDesktopDetailRequest,
    ShowJobRequest,
)

from harness import expect_error

ODD = "wks 0001/中"


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("encoding")
    created = s.import_desktops(s.project_id, [
        {"computer_name": ODD, "ip_address": "203.0.113.7", "os_type": "Others",
         "tags": [{"key": "owner", "value": "zhang san"}]},
        {"computer_name": "plain-01", "ip_address": "203.0.113.8", "os_type": "Linux"},
    ])
    s.odd_id = created[0]["desktop_id"]
    s.plain_id = created[1]["desktop_id"]
    s.client = s.workspace()
    return s


def test_filters_with_spaces_slashes_and_utf8(srv):
    c = srv.client
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_name=ODD, is_installed=False))
    assert [a.desktop_id for a in r.agents_condition] == [srv.odd_id]
    assert r.agents_condition[0].desktop_name == ODD
    r = c.list_desktops(ListDesktopsRequest(computer_name=ODD))
    assert [d.desktop_id for d in r.desktops] == [srv.odd_id]
    r = c.list_desktops_detail(ListDesktopsDetailRequest(computer_name="0001/中"))
    assert [d.desktop_id for d in r.desktops] == [srv.odd_id]
    r = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=srv.odd_id))
    assert r.desktop.computer_name == ODD
    assert [(t.key, t.value) for t in r.desktop.tags] == [("owner", "zhang san")]


def test_install_on_a_desktop_with_an_odd_name(srv):
    r = srv.client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=[srv.odd_id])))
    job = srv.client.show_job(ShowJobRequest(job_id=r.job_id))
    assert [sj.entities.desktop_id for sj in job.sub_jobs] == [srv.odd_id]


@pytest.mark.parametrize("weird", ["no/such", "no such 中", "a%2Fb", "x~y.z"])
def test_unknown_ids_needing_encoding_are_not_found(srv, weird):
    c = srv.client
    expect_error(lambda: c.show_job(ShowJobRequest(job_id=weird)), 404, "WKS.0202")
    expect_error(lambda: c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=weird)), 404, "WKS.0202")
