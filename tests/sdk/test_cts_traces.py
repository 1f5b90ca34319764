"""The audit trail through the unchanged Cloud Trace Service SDK (huaweicloudsdkcts 3.1.219):
ListTraces filters, paging through several pages with next/marker, time bounds, the
system tracker, another project's traces invisible, and the audit action refused to a
readonly user; with AK/SK and with an IAM token."""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcts.v3 import CtsClient, ListTracesRequest, ListTrackersRequest
from huaweicloudsdkworkspace.v2 import BatchInstallAgentReq, BatchInstallAgentRequest

from harness import ProjectTokenCredentials, RecordingExceptionHandler, http_config
from test_token import get_token


def cts(server, ak, sk, project_id):
    return (CtsClient.new_builder()
            .with_http_config(http_config(server.ca))
            .with_credentials(BasicCredentials(ak, sk, project_id))
            .with_endpoint(server.endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("cts")
    created = s.import_desktops(s.project_id, [
        {"computer_name": f"cts-{i:02d}", "ip_address": f"192.0.2.{200 + i}", "os_type": "Linux"} for i in range(1, 4)
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    s.create_user("auditor1", s.project_id, "auditor", password="Auditor-pw-1234")
    key = s.create_access_key("auditor1", s.project_id)
    s.auditor = cts(s, key["access_key"], key["secret_key"], s.project_id)
    s.jobs = []
    ws = s.workspace()
    for i in range(3):
        r = ws.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=[s.desktop_ids[i]])))
        s.jobs.append(r.job_id)
    return s


def test_filters_find_the_install_with_who_and_what(srv):
    b = srv.bootstrap
    r = srv.auditor.list_traces(ListTracesRequest(
        trace_type="system", tracker_name="system", service_type="Workspace", trace_name="batchInstallCesAgent",
        user=b["user_name"], access_key_id=b["access_key"], resource_id=srv.desktop_ids[1],
        trace_rating="normal", resource_type="workspace", limit=10))
    assert r.status_code == 200
    assert r.meta_data.count == 1 and len(r.traces) == 1
    assert r.meta_data.marker is None
    t = r.traces[0]
    assert t.trace_name == "batchInstallCesAgent" and t.code == "200" and t.trace_rating == "normal"
    assert t.user.name == b["user_name"] and t.user.access_key_id == b["access_key"]
    assert t.user.principal_urn.endswith(":user:" + b["user_name"])
    assert t.source_ip == "127.0.0.1"
    assert t.read_only is False
    assert isinstance(t.time, int) and t.record_time >= t.time
    assert srv.jobs[1] in t.response and srv.desktop_ids[1] in t.request
    # The trace id alone finds it, whatever else is asked.
    again = srv.auditor.list_traces(ListTracesRequest(trace_id=t.trace_id, trace_name="nothing-like-it"))
    assert [x.trace_id for x in again.traces] == [t.trace_id]
    # Filters are exact and case-sensitive.
    none = srv.auditor.list_traces(ListTracesRequest(trace_name="BatchInstallCesAgent"))
    assert none.traces == [] and none.meta_data.count == 0


def test_paging_walks_every_page_newest_first(srv):
    req = ListTracesRequest(trace_type="system", trace_name="batchInstallCesAgent", limit=2)
    pages, ids = 0, []
    while True:
        r = srv.auditor.list_traces(req)
        pages += 1
        ids += [t.trace_id for t in r.traces]
        if r.meta_data.marker is None:
            break
        assert r.meta_data.marker == r.traces[-1].trace_id
        req.next = r.meta_data.marker
    assert pages == 2 and len(ids) == 3 and len(set(ids)) == 3


def test_time_bounds_are_exclusive_and_checked(srv):
    now = int(time.time() * 1000)
    inside = srv.auditor.list_traces(ListTracesRequest(_from=now - 600_000, to=now + 60_000, limit=200))
    assert len(inside.traces) >= 3
    t = inside.traces[-1]
    at = srv.auditor.list_traces(ListTracesRequest(_from=t.time, to=t.time + 1, trace_id=None, limit=200))
    assert t.trace_id not in [x.trace_id for x in at.traces], "from is exclusive"
    before = srv.auditor.list_traces(ListTracesRequest(_from=now - 7_200_000, to=now - 3_600_000))
    assert before.traces == []
    with pytest.raises(ClientRequestException) as e:
        srv.auditor.list_traces(ListTracesRequest(_from=now // 1000, to=now))  # seconds, not ms
    assert e.value.status_code == 400 and e.value.error_code == "CTS.0300"


def test_the_system_tracker(srv):
    r = srv.auditor.list_trackers(ListTrackersRequest())
    assert [t.tracker_name for t in r.trackers] == ["system"]
    assert r.trackers[0].tracker_type == "system" and r.trackers[0].status == "enabled"
    with pytest.raises(ClientRequestException) as e:
        srv.auditor.list_trackers(ListTrackersRequest(tracker_name="nope"))
    assert e.value.status_code == 404 and e.value.error_code == "CTS.0214"


def test_another_projects_traces_are_invisible(srv):
    other = srv.create_project("cts-other")
    srv.create_user("auditor2", other["project_id"], "auditor", password="Auditor-pw-5678")
    key = srv.create_access_key("auditor2", other["project_id"])
    theirs = cts(srv, key["access_key"], key["secret_key"], other["project_id"])
    seen = theirs.list_traces(ListTracesRequest(limit=200)).traces
    # Only the other project's own history (the admin commands that made it) is there.
    assert seen and all(t.trace_type == "SystemAction" for t in seen), seen
    assert theirs.list_traces(ListTracesRequest(trace_name="batchInstallCesAgent")).traces == []
    ours = srv.auditor.list_traces(ListTracesRequest(trace_name="batchInstallCesAgent")).traces
    assert ours and not {t.trace_id for t in ours} & {t.trace_id for t in seen}
    # Their key on our project is refused.
    ours_with_theirs = cts(srv, key["access_key"], key["secret_key"], srv.project_id)
    with pytest.raises(ClientRequestException) as e:
        ours_with_theirs.list_traces(ListTracesRequest())
    assert e.value.status_code == 403


def test_a_readonly_user_without_the_audit_action_is_refused(srv):
    srv.create_user("viewer1", srv.project_id, "readonly", password="Viewer-pw-1234")
    key = srv.create_access_key("viewer1", srv.project_id)
    with pytest.raises(ClientRequestException) as e:
        cts(srv, key["access_key"], key["secret_key"], srv.project_id).list_traces(ListTracesRequest())
    assert e.value.status_code == 403 and e.value.error_code == "CTS.0013"


def test_with_a_token(srv):
    r = get_token(srv, user="auditor1", password="Auditor-pw-1234")
    client = cts(srv, "token-mode-unused-ak", "token-mode-unused-sk", srv.project_id)
    client.with_credentials(ProjectTokenCredentials(r.x_subject_token, srv.project_id))
    traces = client.list_traces(ListTracesRequest(trace_name="createTokenByPwd", limit=200)).traces
    assert any(t.user.name == "auditor1" for t in traces)
    assert all("Auditor-pw-1234" not in (t.request or "") for t in traces)
