"""IAM tokens: obtained and validated through the unchanged IAM SDK, then used against the
Workspace API as X-Auth-Token (see harness.ProjectTokenCredentials for how the unchanged
Workspace SDK sends it)."""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkiam.v3 import (
    AuthScope,
    AuthScopeProject,
    IamClient,
    KeystoneCreateUserTokenByPasswordRequest,
    KeystoneCreateUserTokenByPasswordRequestBody,
    KeystoneListProjectsRequest,
    KeystoneValidateTokenRequest,
    PwdAuth,
    PwdIdentity,
    PwdPassword,
    PwdPasswordUser,
    PwdPasswordUserDomain,
)
from huaweicloudsdkworkspace.v2 import (
    BatchDeleteSubJobsRequest,
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    DeleteSubJobsReq,
    JobActionsReq,
    ListAgentsInstallConditionRequest,
    ListDesktopsDetailRequest,
    ListDesktopsRequest,
    ListItaSubJobsRequest,
    RunActionsOnWorkspaceJobRequest,
    ShowDesktopDetailRequest,
    ShowJobRequest,
)

from harness import AUTH_PREFIX, RecordingExceptionHandler, expect_error, http_config, raw, wait_for


def token_request(domain, user, password, project_id=None, project_name=None, nocatalog="true"):
    return KeystoneCreateUserTokenByPasswordRequest(
        nocatalog=nocatalog,
        body=KeystoneCreateUserTokenByPasswordRequestBody(auth=PwdAuth(
            identity=PwdIdentity(methods=["password"], password=PwdPassword(user=PwdPasswordUser(
                domain=PwdPasswordUserDomain(name=domain), name=user, password=password))),
            scope=AuthScope(project=AuthScopeProject(id=project_id, name=project_name)))))


def get_token(server, user=None, password=None, project_id=None, project_name=None):
    b = server.bootstrap
    r = server.iam().keystone_create_user_token_by_password(token_request(
        b["domain_name"], user or b["user_name"], password or b["password"],
        project_id=project_id if (project_id or project_name) else b["project_id"], project_name=project_name))
    assert r.status_code == 201
    assert r.x_subject_token
    return r


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("token")
    created = s.import_desktops(s.project_id, [
        {"computer_name": f"tok-{i:02d}", "ip_address": f"192.0.2.{130 + i}", "os_type": "Linux"} for i in range(1, 5)
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    return s


def test_create_token_by_project_id(srv):
    b = srv.bootstrap
    r = get_token(srv)
    t = r.token
    assert t.methods == ["password"]
    assert t.expires_at and t.issued_at and t.expires_at > t.issued_at
    assert t.project.id == b["project_id"]
    assert t.project.name == b["project_name"] == "cn-north-4"
    assert t.project.domain.name == b["domain_name"]
    assert t.user.name == b["user_name"]
    assert t.user.domain.name == b["domain_name"]
    assert t.roles is not None
    assert t.catalog in (None, [])


def test_create_token_by_project_name(srv):
    r = get_token(srv, project_name="cn-north-4")
    assert r.token.project.id == srv.project_id


def test_wrong_password_is_keystone_401(srv):
    b = srv.bootstrap
    with pytest.raises(ClientRequestException) as info:
        srv.iam().keystone_create_user_token_by_password(
            token_request(b["domain_name"], b["user_name"], b["password"] + "-wrong", project_id=srv.project_id))
    e = info.value
    assert e.status_code == 401
    # Keystone body {"error": {"code": 401, "message": ...}}: the SDK takes code/message from
    # the nested object, so error_code is the integer 401.
    assert e.error_code == 401, e
    assert e.error_msg
    assert e.request_id
    assert e.body["error"]["code"] == 401 and e.body["error"]["title"] == "Unauthorized", e.body


def test_validate_token(srv):
    tok = get_token(srv).x_subject_token
    iam = srv.iam(token=tok)
    r = iam.keystone_validate_token(KeystoneValidateTokenRequest(x_subject_token=tok, nocatalog="true"))
    assert r.status_code == 200
    assert r.x_subject_token == tok
    assert r.token.project.id == srv.project_id
    assert r.token.user.name == srv.bootstrap["user_name"]

    with pytest.raises(ClientRequestException) as info:
        iam.keystone_validate_token(KeystoneValidateTokenRequest(x_subject_token="not-a-token"))
    assert info.value.status_code == 404
    assert info.value.request_id


def test_list_projects_signed_like_region_discovery(srv):
    iam = (IamClient.new_builder().with_http_config(http_config(srv.ca))
           .with_credentials(BasicCredentials(srv.ak, srv.sk))
           .with_endpoint(srv.endpoint).with_exception_handler(RecordingExceptionHandler()).build())
    r = iam.keystone_list_projects(KeystoneListProjectsRequest(name="cn-north-4"))
    assert [(p.id, p.name) for p in r.projects] == [(srv.project_id, "cn-north-4")]
    r = iam.keystone_list_projects(KeystoneListProjectsRequest(name="xx-nowhere-1"))
    assert r.projects == []


def test_every_workspace_api_with_a_token(srv):
    tok = get_token(srv).x_subject_token
    c = srv.token_workspace(tok)

    r = c.list_desktops(ListDesktopsRequest())
    assert r.total_count == 4 and {d.desktop_id for d in r.desktops} == set(srv.desktop_ids)
    r = c.list_desktops(ListDesktopsRequest(computer_name="tok-02"))
    assert [d.desktop_id for d in r.desktops] == [srv.desktop_ids[1]]
    r = c.list_desktops_detail(ListDesktopsDetailRequest(limit=2))
    assert r.total_count == 4 and len(r.desktops) == 2
    r = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=srv.desktop_ids[0]))
    assert r.desktop.computer_name == "tok-01"

    r = c.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=srv.desktop_ids[:2])))
    assert r.status_code == 200 and r.job_id
    job_id = r.job_id
    job = c.show_job(ShowJobRequest(job_id=job_id))
    assert job.id == job_id and job.sub_jobs_total == 2 and job.status == "WAITING"

    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=srv.desktop_ids[0]))
    assert r.total_count == 1 and r.agents_condition[0].task_status != ""

    r = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id))
    assert r.total_count == 2

    r = c.run_actions_on_workspace_job(RunActionsOnWorkspaceJobRequest(job_id=job_id,
                                                                       body=JobActionsReq(op_type="cancel")))
    assert r.status_code == 200
    job = c.show_job(ShowJobRequest(job_id=job_id))
    assert job.status == "FAIL" and {s.error_code for s in job.sub_jobs} == {"WKS.00990003"}

    sub_ids = [s.id for s in job.sub_jobs]
    r = c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(job_ids=sub_ids)))
    assert r.status_code == 200
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id)).total_count == 0

    expect_error(lambda: c.show_job(ShowJobRequest(job_id="missing")), 404, "WKS.0202")


def test_token_errors(srv):
    bad = srv.token_workspace("definitely-not-a-token")
    expect_error(lambda: bad.list_desktops(ListDesktopsRequest()), 401, "APIGW.0301",
                 AUTH_PREFIX + "decrypt token fail")

    r = raw("GET", srv, f"/v2/{srv.project_id}/desktops", sign=False, headers={"X-Auth-Token": ""})
    assert r.status_code == 401 and r.json()["error_code"] == "APIGW.0301", r.text
    assert r.headers.get("X-Request-Id")


def test_token_of_another_project_is_forbidden(srv):
    other = srv.create_project("ap-southeast-1")
    tok = get_token(srv).x_subject_token
    c = srv.token_workspace(tok, project_id=other["project_id"])
    e = expect_error(lambda: c.list_desktops(ListDesktopsRequest()), 403, "WKS.0403")
    assert e.encoded_auth_msg


def test_readonly_token_cannot_install(srv):
    user = srv.create_user("tok-reader", srv.project_id, "readonly", password="Reader-Passw0rd!")
    assert user["password"] == "Reader-Passw0rd!"
    tok = get_token(srv, user="tok-reader", password="Reader-Passw0rd!").x_subject_token
    c = srv.token_workspace(tok)
    assert c.list_desktops(ListDesktopsRequest()).total_count == 4
    e = expect_error(lambda: c.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=srv.desktop_ids[2:]))), 403, "WKS.0403")
    decoded = srv.decode(e.encoded_auth_msg)
    assert decoded["action"] == "workspace:desktops:batchInstallAgents"
    assert decoded["user_name"] == "tok-reader"


def test_expired_token(server_factory):
    s = server_factory("token-ttl", {"auth": {"token_ttl_secs": 2}})
    r = get_token(s)
    tok = r.x_subject_token
    c = s.token_workspace(tok)
    assert c.list_desktops(ListDesktopsRequest()).total_count == 0  # valid (and now cached)

    def call():
        try:
            c.list_desktops(ListDesktopsRequest())
            return None
        except ClientRequestException as e:
            return e

    started = time.monotonic()
    e = wait_for(call, lambda x: x is not None, timeout=10, what="the token to expire")
    assert time.monotonic() - started <= 4.0, "token outlived its 2 s lifetime by too much"
    assert e.status_code == 401 and e.error_code == "APIGW.0301", e
    assert e.error_msg.startswith(AUTH_PREFIX + "token expires"), e
    assert e.request_id
