"""Cloud Eye agent invocations through the unchanged ``huaweicloudsdkces`` v3 client.

Three simulated desktops (one real ``deskfleet-fleet-sim`` process holding a real OpAMP
WebSocket each; every offered package is downloaded and its hash and signature verified)
enroll with a real server. Desktop 0 fails every upgrade the way the guest reports a
rolled-back one (``--fail-upgrade-share``). Through the CES SDK only (AK/SK, and an IAM
token): INSTALL, UPDATE with a version, ROLLBACK, RETRY, UNINSTALL, ListAgentInvocations
with every filter and paging, and the error cases; Workspace-created installs show as
invocations and CES-created work as Workspace sub-jobs.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkces.v3 import (
    BatchCreateAgentInvocationsRequest,
    BatchCreateInvocationRequestBody,
    CesClient,
    ListAgentInvocationsRequest,
)
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListDesktopsRequest,
    ListItaSubJobsRequest,
    ShowJobRequest,
)

import harness
from harness import ProjectTokenCredentials, RecordingExceptionHandler, expect_error, wait_for

N = 3
PREFIX = "sdkces"
NEW_VERSION = "9.0.0"
CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100},
}
DEADLINE_S = 60


def ces_client(server, ak=None, sk=None):
    return (CesClient.new_builder()
            .with_http_config(server.http_config())
            .with_credentials(BasicCredentials(ak or server.ak, sk or server.sk, server.project_id))
            .with_endpoint(server.endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


def create(client, kind, instance_ids=None, invocation_ids=None, version=None, target="telescope"):
    body = BatchCreateInvocationRequestBody(instance_ids=instance_ids, invocation_type=kind,
                                            invocation_target=target, invocation_ids=invocation_ids,
                                            version=version)
    return client.batch_create_agent_invocations(BatchCreateAgentInvocationsRequest(body=body))


def listing(client, **filters):
    return client.list_agent_invocations(ListAgentInvocationsRequest(**filters))


def one(client, invocation_id):
    r = listing(client, invocation_id=invocation_id)
    assert r.count == 1, r
    return r.invocations[0]


def wait_status(client, invocation_id, statuses, what, after=None):
    def done(i):
        return i.invocation_status in statuses and (after is None or i.update_time > after)
    return wait_for(lambda: one(client, invocation_id), done, DEADLINE_S, what, interval=0.2)


def monitor_version() -> str:
    out = subprocess.run([harness.sibling_bin("deskfleet-monitor"), "--version"], capture_output=True,
                         text=True, timeout=10, check=True).stdout.strip()
    return out.split()[-1]


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(module_server_factory, tmp_path_factory):
    f = Fleet()
    f.server = s = module_server_factory("ces-invocations", CONFIG)
    f.ces = ces_client(s)
    f.workspace = s.workspace()
    f.version = monitor_version()
    token = s.create_enrollment_token()["enrollment_token"]
    out = tmp_path_factory.mktemp("sim")
    args = [harness.sibling_bin("deskfleet-fleet-sim"), "--server", s.endpoint, "--trusted-key", str(s.signing_pub),
            "--desktops", str(N), "--connect-rate", "50", "--hostname-prefix", PREFIX,
            # slot 0 of 10000: desktop 0 only
            "--fail-upgrade-share", "0.0001"]
    if s.ca:
        args += ["--ca-cert", s.ca]
    f.sim = subprocess.Popen(args, stdout=open(out / "sim.out", "wb"), stderr=open(out / "sim.log", "wb"),
                             stdin=subprocess.DEVNULL, env={**harness._server_env(),
                                                            "DESKFLEET_ENROLLMENT_TOKEN": token})
    try:
        desktops = wait_for(lambda: f.workspace.list_desktops(ListDesktopsRequest()).desktops,
                            lambda ds: len(ds) == N, 30, "the simulated desktops to enroll")
        by_name = {d.computer_name: d.desktop_id for d in desktops}
        f.ids = [by_name[f"{PREFIX}-{i:05d}"] for i in range(N)]
        yield f
    finally:
        f.sim.terminate()
        f.sim.wait(timeout=10)


def publish(server, version):
    """Publishes the monitor binary again as another version, as an archive."""
    path = server.data_dir / f"monitor-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(harness.sibling_bin("deskfleet-monitor"), arcname="deskfleet-monitor")
        manifest = json.dumps({"name": "deskfleet-monitor", "version": version,
                               "entrypoint": "deskfleet-monitor"}).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return server.admin("packages", "publish", str(path), "--version", version)


def test_install_on_every_desktop(fleet):
    r = create(fleet.ces, "INSTALL", instance_ids=fleet.ids)
    assert r.status_code == 201
    assert [i.ret_status for i in r.invocations] == ["successful"] * N, r
    assert [i.instance_id for i in r.invocations] == fleet.ids
    fleet.installs = {i.instance_id: i.invocation_id for i in r.invocations}
    for desktop, inv in fleet.installs.items():
        done = wait_status(fleet.ces, inv, {"SUCCEEDED"}, f"the install on {desktop}")
        assert done.instance_id == desktop
        assert done.invocation_type == "INSTALL"
        assert done.invocation_target == "telescope"
        assert done.instance_type == "ECS"
        assert done.instance_name.startswith(PREFIX)
        assert done.target_version == fleet.version
        assert done.current_version is None, "no agent before the first install"
        assert isinstance(done.create_time, int) and done.create_time > 1_111_111_111_111
        assert done.update_time >= done.create_time
        assert done.result_msg, done


def test_one_history_under_both_apis(fleet):
    # A Workspace install is an invocation...
    job = fleet.workspace.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=[fleet.ids[1]]))).job_id
    sub = fleet.workspace.show_job(ShowJobRequest(job_id=job)).sub_jobs[0]
    inv = wait_status(fleet.ces, sub.id, {"SUCCEEDED"}, "the Workspace install, as an invocation")
    assert (inv.invocation_type, inv.instance_id) == ("INSTALL", fleet.ids[1])
    assert inv.current_version == fleet.version
    # ...and a CES install is a Workspace sub-job of the same job type.
    subs = fleet.workspace.list_ita_sub_jobs(ListItaSubJobsRequest(job_type="batchInstallCesAgent", limit=1000))
    seen = {s.id for s in subs.jobs}
    assert set(fleet.installs.values()) <= seen


def test_update_to_a_version_then_roll_it_back(fleet):
    publish(fleet.server, NEW_VERSION)
    targets = fleet.ids[1:]
    r = create(fleet.ces, "UPDATE", instance_ids=targets, version=NEW_VERSION)
    assert [i.ret_status for i in r.invocations] == ["successful"] * 2, r
    updates = [i.invocation_id for i in r.invocations]
    for inv in updates:
        done = wait_status(fleet.ces, inv, {"SUCCEEDED"}, "the update")
        assert (done.invocation_type, done.current_version, done.target_version) == \
            ("UPDATE", fleet.version, NEW_VERSION)
    fleet.updates = updates

    r = create(fleet.ces, "ROLLBACK", invocation_ids=updates)
    assert [i.ret_status for i in r.invocations] == ["successful"] * 2, r
    rollbacks = [i.invocation_id for i in r.invocations]
    assert not set(rollbacks) & set(updates), "a ROLLBACK is a new invocation"
    for inv in rollbacks:
        done = wait_status(fleet.ces, inv, {"ROLLBACKED"}, "the rollback")
        assert (done.invocation_type, done.target_version) == ("ROLLBACK", fleet.version)
    for inv in updates:
        assert one(fleet.ces, inv).invocation_status == "ROLLBACKED"

    # Neither a rolled-back UPDATE nor a first INSTALL can be rolled back.
    first_install = fleet.installs[fleet.ids[2]]
    r = create(fleet.ces, "ROLLBACK", invocation_ids=[updates[0], first_install])
    assert [(i.ret_status, i.error_code) for i in r.invocations] == \
        [("error", "invocationmgr.0008")] * 2, r
    assert "already rolled back" in r.invocations[0].error_msg
    assert "no earlier version" in r.invocations[1].error_msg


def test_a_failed_upgrade_carries_the_desktops_reason_and_can_be_retried(fleet):
    r = create(fleet.ces, "UPDATE", instance_ids=[fleet.ids[0]], version=NEW_VERSION)
    inv = r.invocations[0].invocation_id
    failed = wait_status(fleet.ces, inv, {"FAILED"}, "the failing upgrade")
    # The desktop's own reason (its reason code becomes the task error code).
    assert "the new agent exited during its watch window" in failed.result_msg, failed
    assert f"rolled back to {fleet.version}" in failed.result_msg, failed

    r = create(fleet.ces, "RETRY", invocation_ids=[inv])
    assert (r.invocations[0].ret_status, r.invocations[0].invocation_id) == ("successful", inv), r
    again = wait_status(fleet.ces, inv, {"FAILED"}, "the retried upgrade to end", after=failed.update_time)
    assert "the new agent exited" in again.result_msg

    # Only FAILED or TIMEOUT invocations are retried; unknown ids are named.
    r = create(fleet.ces, "RETRY", invocation_ids=[fleet.installs[fleet.ids[0]], "no-such-invocation"])
    assert [(i.ret_status, i.error_code) for i in r.invocations] == \
        [("error", "invocationmgr.0007"), ("error", "invocationmgr.0006")], r


def test_uninstall_extension(fleet):
    r = create(fleet.ces, "UNINSTALL", instance_ids=[fleet.ids[2]])
    inv = r.invocations[0].invocation_id
    done = wait_status(fleet.ces, inv, {"SUCCEEDED"}, "the uninstall")
    assert done.invocation_type == "UNINSTALL"
    assert done.target_version is None
    # UPDATE needs the agent it no longer has.
    r = create(fleet.ces, "UPDATE", instance_ids=[fleet.ids[2]])
    assert (r.invocations[0].ret_status, r.invocations[0].error_code) == ("error", "invocationmgr.0005"), r


def test_per_target_errors(fleet):
    s = fleet.server
    other = s.create_project("ces-other")
    foreign = s.import_desktops(other["project_id"], [
        {"computer_name": "elsewhere", "ip_address": "10.9.9.9", "os_type": "Linux"}])[0]["desktop_id"]
    r = create(fleet.ces, "INSTALL", instance_ids=["unknown-desktop-1", foreign])
    assert [(i.ret_status, i.error_code, i.instance_id) for i in r.invocations] == [
        ("error", "invocationmgr.0001", "unknown-desktop-1"),
        ("error", "invocationmgr.0001", foreign)], r
    assert all(i.invocation_id is None for i in r.invocations)
    r = create(fleet.ces, "UPDATE", instance_ids=[fleet.ids[1]], version="7.7.7")
    assert (r.invocations[0].ret_status, r.invocations[0].error_code) == ("error", "invocationmgr.0002"), r
    assert "7.7.7" in r.invocations[0].error_msg


def test_request_errors(fleet):
    c = fleet.ces
    expect_error(lambda: create(c, "INSTALL", instance_ids=[f"d{i}" for i in range(101)]), 400, "taskmgr.0005")
    e = expect_error(lambda: create(c, "REMOTE_INSTALL", instance_ids=[fleet.ids[0]]), 400, "taskmgr.0005")
    assert "REMOTE_INSTALL" in e.error_msg and "INSTALL" in e.error_msg
    expect_error(lambda: create(c, "SET_REMOTE_INSTALLER", instance_ids=[fleet.ids[0]]), 400, "taskmgr.0005")
    expect_error(lambda: create(c, "INSTALL", instance_ids=[fleet.ids[0]], target="uniagent"), 400, "taskmgr.0005")
    expect_error(lambda: create(c, "INSTALL", instance_ids=[]), 400, "taskmgr.0005")
    expect_error(lambda: create(c, "RETRY"), 400, "taskmgr.0005")
    expect_error(lambda: create(c, "INSTALL", instance_ids=["bad_id"]), 400, "taskmgr.0005")
    expect_error(lambda: create(c, "INSTALL", instance_ids=[fleet.ids[0]], version="1 0"), 400, "taskmgr.0005")
    expect_error(lambda: listing(c, limit=101), 400, "taskmgr.0005")
    expect_error(lambda: listing(c, limit=0), 400, "taskmgr.0005")
    expect_error(lambda: listing(c, invocation_type="REBOOT"), 400, "taskmgr.0005")


def test_readonly_user_cannot_create(fleet):
    s = fleet.server
    s.create_user("ces-reader", s.project_id, "readonly")
    key = s.create_access_key("ces-reader", s.project_id)
    ro = ces_client(s, ak=key["access_key"], sk=key["secret_key"])
    assert listing(ro).count > 0, "reads are allowed"
    expect_error(lambda: create(ro, "INSTALL", instance_ids=[fleet.ids[0]]), 403, "taskmgr.0007")


def test_list_filters_and_pages(fleet):
    c = fleet.ces
    everything = listing(c)
    total = everything.count
    assert total == len(everything.invocations) >= 10
    times = [i.create_time for i in everything.invocations]
    assert times == sorted(times, reverse=True), "newest first"
    first, second = listing(c, limit=1, offset=0), listing(c, limit=1, offset=1)
    assert first.count == second.count == total
    assert first.invocations[0].invocation_id != second.invocations[0].invocation_id
    assert listing(c, offset=total).invocations == []
    mine = listing(c, instance_id=fleet.ids[1])
    assert mine.count >= 4 and {i.instance_id for i in mine.invocations} == {fleet.ids[1]}
    assert listing(c, invocation_type="UPDATE").count == 3
    assert listing(c, invocation_type="ROLLBACK").count == 2
    assert listing(c, invocation_type="UNINSTALL").count == 1
    assert listing(c, invocation_type="RETRY").count == 0
    assert listing(c, instance_type="ECS").count == total
    assert listing(c, instance_type="BMS").count == 0
    assert listing(c, invocation_target="telescope").count == total
    some = everything.invocations[0]
    assert listing(c, invocation_id=some.invocation_id, instance_id=some.instance_id).count == 1
    assert listing(c, invocation_id=some.invocation_id, instance_id=fleet.ids[0] if some.instance_id != fleet.ids[0]
                   else fleet.ids[1]).count == 0


def test_token_client(fleet):
    from test_token import get_token
    tok = get_token(fleet.server).x_subject_token
    c = ces_client(fleet.server)
    c.with_credentials(ProjectTokenCredentials(tok, fleet.server.project_id))
    assert listing(c).count > 0
    r = create(c, "INSTALL", instance_ids=["not-a-desktop"])
    assert (r.status_code, r.invocations[0].error_code) == (201, "invocationmgr.0001")


def test_rollout_fields_on_a_raw_request(fleet):
    """max_concurrency / max_errors: extension fields the SDK cannot send (signed raw)."""
    path = f"/v3/{fleet.server.project_id}/agent-invocations/batch-create"
    body = {"instance_ids": fleet.ids[1:], "invocation_type": "INSTALL", "invocation_target": "telescope",
            "max_concurrency": "50%", "max_errors": "0"}
    r = harness.raw("POST", fleet.server, path, body=body, project_id=fleet.server.project_id)
    assert r.status_code == 201, r.text
    assert [i["ret_status"] for i in r.json()["invocations"]] == ["successful"] * 2, r.text
    for bad in ({"max_concurrency": "0%"}, {"max_errors": "ten"}, {"max_concurrency": "-1"}):
        r = harness.raw("POST", fleet.server, path, body={**body, **bad}, project_id=fleet.server.project_id)
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "taskmgr.0005", r.text
        assert next(iter(bad)) in r.json()["error_msg"], r.text
