"""Job lifecycle without a desktop daemon: every sub-job fails at the delivery timeout with
WKS.00990001, the job ends FAIL; retry puts the FAILED sub-jobs back to WAITING (and they
fail again); cancel only touches WAITING sub-jobs."""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkworkspace.v2 import (
    BatchDeleteSubJobsRequest,
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    DeleteSubJobsReq,
    JobActionsReq,
    ListAgentsInstallConditionRequest,
    ListItaSubJobsRequest,
    RunActionsOnWorkspaceJobRequest,
    ShowJobRequest,
)

from harness import wait_for

DELIVERY_TIMEOUT_MS = 1500
TIMEOUT_CODE = "WKS.00990001"
CANCEL_CODE = "WKS.00990003"
FINISH_DEADLINE_S = 15


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("timeouts", {"jobs": {"delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
                                                    "sweep_interval_ms": 100}})
    created = s.import_desktops(s.project_id, [
        {"computer_name": f"to-{i:02d}", "ip_address": f"192.0.2.{60 + i}", "os_type": "Linux"} for i in range(1, 7)
    ])
    s.desktop_ids = [d["desktop_id"] for d in created]
    s.client = s.workspace()
    return s


def install(srv, ids):
    r = srv.client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=ids)))
    assert r.status_code == 200 and r.job_id
    return r.job_id


def show(srv, job_id):
    return srv.client.show_job(ShowJobRequest(job_id=job_id))


def action(srv, job_id, op):
    r = srv.client.run_actions_on_workspace_job(RunActionsOnWorkspaceJobRequest(job_id=job_id,
                                                                               body=JobActionsReq(op_type=op)))
    assert r.status_code == 200 and r.job_id
    return r


def wait_finished(srv, job_id):
    return wait_for(lambda: show(srv, job_id), lambda j: j.status in ("SUCCESS", "FAIL"),
                    timeout=FINISH_DEADLINE_S, what=f"job {job_id} to finish", interval=0.2)


def assert_timed_out(job, n):
    assert job.status == "FAIL", job
    assert job.job_error_code == TIMEOUT_CODE, job
    assert job.fail_reason and str(n) in job.fail_reason, job.fail_reason
    assert job.end_time
    assert job.sub_jobs_total == n and len(job.sub_jobs) == n
    for sj in job.sub_jobs:
        assert sj.status == "FAILED", sj
        assert sj.error_code == TIMEOUT_CODE, sj
        assert sj.fail_reason, sj
        assert sj.end_time, sj


def test_delivery_timeout_then_retry(srv):
    ids_ = srv.desktop_ids[:3]
    started = time.monotonic()
    job_id = install(srv, ids_)
    first = show(srv, job_id)
    assert first.status == "WAITING" and {s.status for s in first.sub_jobs} == {"WAITING"}

    job = wait_finished(srv, job_id)
    elapsed = time.monotonic() - started
    assert elapsed >= DELIVERY_TIMEOUT_MS / 1000 * 0.9, f"failed after {elapsed:.2f}s, before the delivery timeout"
    assert_timed_out(job, 3)
    assert {s.entities.desktop_id for s in job.sub_jobs} == set(ids_)
    first_sub_ids = {s.id for s in job.sub_jobs}

    r = srv.client.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, status="FAILED"))
    assert r.total_count == 3 and {j.error_code for j in r.jobs} == {TIMEOUT_CODE}

    agents = srv.client.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=ids_[0]))
    a = agents.agents_condition[0]
    assert a.task_status == ""  # idle again
    assert a.process is not None  # it had a task
    assert a.agent_info[0].is_installed is False

    # retry: the FAILED sub-jobs go back to WAITING, with a fresh delivery deadline
    retried_at = time.monotonic()
    action(srv, job_id, "retry")
    job = show(srv, job_id)
    assert job.status in ("WAITING", "RUNNING"), job
    assert {s.status for s in job.sub_jobs} == {"WAITING"}, job.sub_jobs
    assert {s.id for s in job.sub_jobs} == first_sub_ids
    assert srv.client.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, status="WAITING")).total_count == 3
    a = srv.client.list_agents_install_condition(
        ListAgentsInstallConditionRequest(desktop_id=ids_[0])).agents_condition[0]
    assert a.task_status != ""

    job = wait_finished(srv, job_id)
    assert time.monotonic() - retried_at >= DELIVERY_TIMEOUT_MS / 1000 * 0.9
    assert_timed_out(job, 3)


def test_cancel_waiting_job(srv):
    job_id = install(srv, srv.desktop_ids[3:5])
    action(srv, job_id, "cancel")  # well before the 1.5 s delivery timeout
    job = show(srv, job_id)
    assert job.status == "FAIL", job
    assert job.end_time
    assert {s.status for s in job.sub_jobs} == {"FAILED"}
    assert {s.error_code for s in job.sub_jobs} == {CANCEL_CODE}


def test_cancel_of_a_finished_job_changes_nothing(srv):
    job_id = install(srv, srv.desktop_ids[5:6])
    before = wait_finished(srv, job_id)
    assert_timed_out(before, 1)
    action(srv, job_id, "cancel")
    after = show(srv, job_id)
    assert_timed_out(after, 1)
    assert after.end_time == before.end_time


def test_delete_finished_sub_jobs_by_status(srv):
    c = srv.client
    cancelled = install(srv, srv.desktop_ids[1:2])
    action(srv, cancelled, "cancel")
    before = c.list_ita_sub_jobs(ListItaSubJobsRequest(status="FAILED", limit=1000))
    assert before.total_count >= 1 and cancelled in {j.job_id for j in before.jobs}
    job_id = install(srv, srv.desktop_ids[:1])  # stays WAITING for 1.5 s: must survive
    r = c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(delete_by_status="FAILED")))
    assert r.status_code == 200
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(status="FAILED")).total_count == 0
    remaining = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id))
    assert remaining.total_count == 1
    assert remaining.jobs[0].status in ("WAITING", "FAILED")
