"""Region mode: BasicCredentials without a project id. The SDK discovers the project through
IAM `GET /v3/projects?name=<region>` at HUAWEICLOUD_SDK_IAM_ENDPOINT, then calls Workspace."""

from __future__ import annotations

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.region.region import Region
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListDesktopsRequest,
    ShowJobRequest,
    WorkspaceClient,
)
from huaweicloudsdkworkspace.v2.region.workspace_region import WorkspaceRegion

from harness import RecordingExceptionHandler, http_config


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("region")
    created = s.import_desktops(s.project_id, [
        {"computer_name": "reg-01", "ip_address": "192.0.2.201", "os_type": "Linux"},
        {"computer_name": "reg-02", "ip_address": "192.0.2.202", "os_type": "Windows"},
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    # a second project, named after another region, must not confuse the discovery
    s.create_project("cn-south-1")
    return s


def build(srv, region, ak=None, sk=None):
    creds = BasicCredentials(ak or srv.ak, sk or srv.sk)  # no project id
    client = (WorkspaceClient.new_builder().with_http_config(http_config(srv.ca)).with_credentials(creds)
              .with_region(region).with_exception_handler(RecordingExceptionHandler()).build())
    return client, creds


def exercise(srv, client):
    r = client.list_desktops(ListDesktopsRequest())
    assert r.total_count == 2 and {d.desktop_id for d in r.desktops} == set(srv.desktop_ids)
    r = client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=srv.desktop_ids)))
    job = client.show_job(ShowJobRequest(job_id=r.job_id))
    assert job.id == r.job_id and job.sub_jobs_total == 2


def test_custom_region_discovers_project(srv, monkeypatch):
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", srv.endpoint)
    client, creds = build(srv, Region("cn-north-4", srv.endpoint))
    assert creds.project_id == srv.project_id  # discovered during build()
    exercise(srv, client)


def test_workspace_region_value_of(srv, monkeypatch):
    # WorkspaceRegion.value_of consults HUAWEICLOUD_SDK_REGION_WORKSPACE_<REGION> first, so the
    # SDK's own region table resolves "cn-north-4" to the local server.
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", srv.endpoint)
    monkeypatch.setenv("HUAWEICLOUD_SDK_REGION_WORKSPACE_CN_NORTH_4", srv.endpoint)
    key = srv.create_access_key(srv.bootstrap["user_name"], srv.project_id)  # fresh AK: the SDK caches per AK
    region = WorkspaceRegion.value_of("cn-north-4")
    assert region.endpoints == [srv.endpoint]
    client, creds = build(srv, region, ak=key["access_key"], sk=key["secret_key"])
    assert creds.project_id == srv.project_id
    exercise(srv, client)
