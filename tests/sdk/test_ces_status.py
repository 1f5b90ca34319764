"""Cloud Eye ListAgentStatus (``POST /v3/{project_id}/agent-status/batch-query``) through the
UNCHANGED ``huaweicloudsdkces`` v3 client: a real guest that installs the real monitoring
agent (``telescope``), a desktop that never connected, unknown ids, another project's
desktop, the filters, the body limits, AK/SK and a token, and a readonly user.

The mapping under test is written down in docs/ces.md, "Agent status"."""

from __future__ import annotations

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkces.v3 import CesClient, ListAgentStatusRequest, ListAgentStatusRequestBody
from huaweicloudsdkiam.v3 import (
    AuthScope,
    AuthScopeProject,
    KeystoneCreateUserTokenByPasswordRequest,
    KeystoneCreateUserTokenByPasswordRequestBody,
    PwdAuth,
    PwdIdentity,
    PwdPassword,
    PwdPasswordUser,
    PwdPasswordUserDomain,
)
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListAgentsInstallConditionRequest,
    ListDesktopsRequest,
    ShowDesktopDetailRequest,
    ShowJobRequest,
)

from harness import (
    Guest,
    ProjectTokenCredentials,
    RecordingExceptionHandler,
    expect_error,
    http_config,
    wait_for,
)

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
PASSWORD = "Readonly-Passw0rd!"


def ces_client(server, ak=None, sk=None, project_id=None) -> CesClient:
    return (CesClient.new_builder()
            .with_http_config(http_config(server.ca))
            .with_credentials(BasicCredentials(ak or server.ak, sk or server.sk, project_id or server.project_id))
            .with_endpoint(server.endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


def token_ces_client(server, token, project_id=None) -> CesClient:
    """A token call with the unchanged CES SDK, as harness.ProjectTokenCredentials explains."""
    client = ces_client(server, "token-mode-unused-ak", "token-mode-unused-sk", project_id)
    client.with_credentials(ProjectTokenCredentials(token, project_id or server.project_id))
    return client


def get_token(server) -> str:
    b = server.bootstrap
    body = KeystoneCreateUserTokenByPasswordRequestBody(auth=PwdAuth(
        identity=PwdIdentity(methods=["password"], password=PwdPassword(user=PwdPasswordUser(
            domain=PwdPasswordUserDomain(name=b["domain_name"]), name=b["user_name"], password=b["password"]))),
        scope=AuthScope(project=AuthScopeProject(id=b["project_id"]))))
    r = server.iam().keystone_create_user_token_by_password(
        KeystoneCreateUserTokenByPasswordRequest(nocatalog="true", body=body))
    assert r.status_code == 201
    return r.x_subject_token


def query(client, instance_ids, **filters):
    r = client.list_agent_status(ListAgentStatusRequest(body=ListAgentStatusRequestBody(
        instance_ids=instance_ids, **filters)))
    assert r.status_code == 200
    return r.agent_status


def statuses(agent_status) -> dict:
    """``{instance_id: (uniagent_status, telescope status, telescope version)}``."""
    out = {}
    for s in agent_status:
        assert [e.name for e in s.extensions] == ["telescope"], s
        e = s.extensions[0]
        out[s.instance_id] = (s.uniagent_status, e.status, e.version)
    return out


@pytest.fixture(scope="module")
def fleet(module_server_factory, tmp_path_factory, request):
    """One server with one-second heartbeats; a real guest with the agent installed; an
    imported desktop that never connected; another project's desktop; a readonly user."""
    s = module_server_factory("ces-status", {"fleet": {"heartbeat_secs": 1, "schedule_interval_ms": 100}})
    token = s.create_enrollment_token()["enrollment_token"]
    guest = Guest(s, token, tmp_path_factory.mktemp("guests") / "state", "ces-status-1").start()
    request.addfinalizer(guest.stop)
    ws = s.workspace()
    online = wait_for(lambda: ws.list_desktops(ListDesktopsRequest()).desktops,
                      lambda d: len(d) == 1, timeout=60, what="the guest to enroll", interval=0.2)[0].desktop_id
    job = ws.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=[online]))).job_id
    done = wait_for(lambda: ws.show_job(ShowJobRequest(job_id=job)), lambda j: j.status in ("SUCCESS", "FAIL"),
                    timeout=120, what="the agent install", interval=0.3)
    assert done.status == "SUCCESS", f"{done}\n{guest.log_tail()}\n{s.log_tail()}"
    never = s.import_desktops(s.project_id, [
        {"computer_name": "ces-never", "ip_address": "192.0.2.201", "os_type": "Linux"}])[0]["desktop_id"]
    other_project = s.create_project("ces-other")
    other = s.import_desktops(other_project["project_id"], [
        {"computer_name": "ces-foreign", "ip_address": "192.0.2.202", "os_type": "Linux"}])[0]["desktop_id"]
    s.create_user("ces-reader", s.project_id, "readonly", password=PASSWORD)
    reader = s.create_access_key("ces-reader", s.project_id)
    s.guest, s.online, s.never, s.other = guest, online, never, other
    s.other_project = other_project["project_id"]
    s.reader = reader
    return s


def test_a_running_guest_and_its_agent(fleet):
    version = wait_for(lambda: statuses(query(ces_client(fleet), [fleet.online])),
                       lambda st: st[fleet.online][1] == "running", timeout=20, what="telescope running")
    uniagent, status, v = version[fleet.online]
    assert (uniagent, status) == ("running", "running")
    assert v and v[0].isdigit(), v


def test_never_connected_unknown_and_foreign_ids_have_no_guest(fleet):
    got = statuses(query(ces_client(fleet), [fleet.never, UNKNOWN_ID, fleet.other]))
    # Another project's desktop answers exactly as an id nobody has.
    assert got == {
        fleet.never: ("none", "none", None),
        UNKNOWN_ID: ("none", "none", None),
        fleet.other: ("none", "none", None),
    }


def test_one_entry_per_id_in_request_order(fleet):
    ids = [UNKNOWN_ID, fleet.online, fleet.never, fleet.online]
    got = query(ces_client(fleet), ids)
    assert [s.instance_id for s in got] == [UNKNOWN_ID, fleet.online, fleet.never]


def test_filters(fleet):
    c = ces_client(fleet)
    ids = [fleet.online, fleet.never, UNKNOWN_ID]
    assert [s.instance_id for s in query(c, ids, uniagent_status="running")] == [fleet.online]
    assert [s.instance_id for s in query(c, ids, uniagent_status="none")] == [fleet.never, UNKNOWN_ID]
    assert query(c, ids, uniagent_status="unknown") == []
    # Pausing the agent is not offered: nothing is ever silent.
    assert query(c, ids, uniagent_status="silent") == []
    assert [s.instance_id for s in query(c, ids, extension_name="telescope", extension_status="running")] \
        == [fleet.online]
    assert [s.instance_id for s in query(c, ids, extension_status="none")] == [fleet.never, UNKNOWN_ID]
    assert query(c, ids, uniagent_status="running", extension_status="none") == []


@pytest.mark.parametrize("filters,needle", [
    ({"extension_name": "uniagent"}, "telescope"),
    ({"uniagent_status": "RUNNING"}, "uniagent_status"),
    ({"extension_status": "ok"}, "extension_status"),
])
def test_bad_filters_are_refused(fleet, filters, needle):
    e = expect_error(lambda: query(ces_client(fleet), [fleet.online], **filters), 400, "taskmgr.0005")
    assert needle in e.error_msg, e.error_msg


def test_empty_body_is_a_clear_400(fleet):
    # No body: the SDK sends a POST with Content-Length 0.
    e = expect_error(lambda: ces_client(fleet).list_agent_status(ListAgentStatusRequest()), 400, "taskmgr.0005")
    assert "empty" in e.error_msg and "instance_ids" in e.error_msg, e.error_msg


def test_instance_ids_limits(fleet):
    c = ces_client(fleet)
    e = expect_error(lambda: query(c, [f"d-{i}" for i in range(2001)]), 400, "taskmgr.0005")
    assert "2001" in e.error_msg and "2000" in e.error_msg, e.error_msg
    e = expect_error(lambda: query(c, []), 400, "taskmgr.0005")
    assert "instance_ids" in e.error_msg
    e = expect_error(lambda: query(c, ["not_a/valid id"]), 400, "taskmgr.0005")
    assert "not_a/valid id" in e.error_msg
    e = expect_error(lambda: c.list_agent_status(ListAgentStatusRequest(body=ListAgentStatusRequestBody())),
                     400, "taskmgr.0005")
    assert "instance_ids" in e.error_msg
    # 2000 is allowed: one entry each.
    many = [f"d-{i}" for i in range(1999)] + [fleet.online]
    got = query(c, many)
    assert len(got) == 2000
    assert statuses(got)[fleet.online][0] == "running"


def test_a_token_works_like_a_signature(fleet):
    got = statuses(query(token_ces_client(fleet, get_token(fleet)), [fleet.online, fleet.never]))
    assert got[fleet.online][0] == "running"
    assert got[fleet.never] == ("none", "none", None)


def test_a_readonly_user_may_query(fleet):
    c = ces_client(fleet, fleet.reader["access_key"], fleet.reader["secret_key"])
    assert statuses(query(c, [fleet.online]))[fleet.online][0] == "running"


def test_another_projects_path_is_forbidden(fleet):
    # A key is bound to its project: asking on another project's path is refused, and the
    # other project's desktop is never described.
    c = ces_client(fleet, project_id=fleet.other_project)
    expect_error(lambda: query(c, [fleet.other]), 403, "taskmgr.0007")


def workspace_view(server, desktop_id):
    """``(status, login_status)`` from ShowDesktopDetail, and ``status`` and the agent's
    ``is_installed`` from ListAgentsInstallCondition, through the Workspace SDK."""
    ws = server.workspace()
    d = ws.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=desktop_id)).desktop
    a = ws.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=desktop_id))
    assert a.total_count == 1
    cond = a.agents_condition[0]
    return d.status, d.login_status, cond.status, cond.agent_info[0].is_installed


def test_the_workspace_fields_agree(fleet):
    assert workspace_view(fleet, fleet.online) == ("ACTIVE", "REGISTERED", "ACTIVE", True)
    assert workspace_view(fleet, fleet.never) == ("ACTIVE", "UNREGISTER", "ACTIVE", False)


def test_zz_a_stopped_guest_is_unknown_at_once(fleet):
    # Last in the module: it stops the guest. A clean stop says goodbye: offline at once.
    assert fleet.guest.terminate() == 0, fleet.guest.log_tail()
    got = wait_for(lambda: statuses(query(ces_client(fleet), [fleet.online])),
                   lambda st: st[fleet.online][0] == "unknown", timeout=3, what="uniagent unknown")
    uniagent, status, version = got[fleet.online]
    assert status == "unknown"
    assert version  # the last version it reported is still known
    # The Workspace fields say the same: not running, its guest not registered; what is
    # installed on its disk is still installed.
    assert workspace_view(fleet, fleet.online) == ("SHUTOFF", "UNREGISTER", "SHUTOFF", True)
