"""Every Workspace endpoint through the unchanged SDK with AK/SK signing: success paths with
real values, filters that filter, paging, and the request-validation errors.

One server (default settings: the delivery timeout is 10 minutes, so sub-jobs stay WAITING
for the whole module) with 16 desktops in the bootstrap project and 2 in a second project.
Each test installs on its own desktops (never on one with an install in flight) so that
the tests do not depend on their order. Desktops: 1-3 cancel/delete, 4-5 ShowJob, 6 queued
task, 7-8 sub-job listing, 11 op_type validation, 13 cross-project, 14 retry, 15 entities;
9, 10, 12 and 16 never get a task.
"""

from __future__ import annotations

import pytest
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

from harness import expect_error, ids, raw

N = 16  # desktops in the bootstrap project
JOB_TYPE = "batchInstallCesAgent"
AGENT_NAME = "deskfleet-monitor"


def desktop_spec(i: int) -> dict:
    linux = i <= 8 or i >= 13
    d = {
        "computer_name": f"lab-{'lin' if linux else 'win'}-{i:02d}",
        "ip_address": f"192.0.2.{10 + i}",
        "os_type": "Linux" if linux else "Windows",
    }
    if i <= 3:
        d["enterprise_project_id"] = "ep-finance"
    if i <= 2:
        d["tags"] = [{"key": "team", "value": "qa"}]
    return d


class World:
    pass


@pytest.fixture(scope="module")
def world(module_server_factory):
    w = World()
    w.server = s = module_server_factory("workspace")
    w.pid = s.project_id
    created = s.import_desktops(w.pid, [desktop_spec(i) for i in range(1, N + 1)])
    assert len(created) == N, created
    w.specs = {desktop_spec(i)["computer_name"]: desktop_spec(i) for i in range(1, N + 1)}
    w.by_name = {d["computer_name"]: d["desktop_id"] for d in created}
    assert set(w.by_name) == set(w.specs)
    for d in created:
        assert d["ip_address"] == w.specs[d["computer_name"]]["ip_address"], d
    w.d = {i: w.by_name[desktop_spec(i)["computer_name"]] for i in range(1, N + 1)}
    w.all_ids = set(w.by_name.values())

    other = s.create_project("cn-south-1")
    assert other["name"] == "cn-south-1" and other["project_id"] != w.pid, other
    w.other_pid = other["project_id"]
    w.other = s.import_desktops(w.other_pid, [
        {"computer_name": "b-desk-01", "ip_address": "198.51.100.1", "os_type": "Others"},
        {"computer_name": "b-desk-02", "ip_address": "198.51.100.2", "os_type": "Linux"},
    ])
    w.other_ids = {d["desktop_id"] for d in w.other}
    w.client = s.workspace()
    return w


def install(w, *desktop_ids) -> str:
    r = w.client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=list(desktop_ids))))
    assert r.status_code == 200
    assert r.job_id, r
    return r.job_id


def show_job(w, job_id):
    r = w.client.show_job(ShowJobRequest(job_id=job_id))
    assert r.status_code == 200
    return r


# ------------------------------------------------------------------------ desktops


def test_list_desktops_all_and_paging(world):
    c = world.client
    r = c.list_desktops(ListDesktopsRequest())
    assert r.total_count == N
    assert ids(r.desktops) == world.all_ids  # never another project's desktops
    for d in r.desktops:
        spec = world.specs[d.computer_name]
        assert d.ip_address == spec["ip_address"]
        assert d.status == "ACTIVE"

    pages = [c.list_desktops(ListDesktopsRequest(limit=5, offset=o)) for o in (0, 5, 10, 15)]
    assert [len(p.desktops) for p in pages] == [5, 5, 5, 1]
    assert all(p.total_count == N for p in pages)
    assert set().union(*(ids(p.desktops) for p in pages)) == world.all_ids
    assert c.list_desktops(ListDesktopsRequest(limit=5, offset=N)).desktops == []
    assert c.list_desktops(ListDesktopsRequest(limit=1000)).total_count == N


def test_list_desktops_filters(world):
    c = world.client
    d1, d2 = world.d[1], world.d[10]
    r = c.list_desktops(ListDesktopsRequest(desktop_id=[d2, d1]))
    assert ids(r.desktops) == {d1, d2} and r.total_count == 2

    r = c.list_desktops(ListDesktopsRequest(computer_name="lab-lin-05"))
    assert [d.desktop_id for d in r.desktops] == [world.d[5]] and r.total_count == 1

    r = c.list_desktops(ListDesktopsRequest(desktop_ip="192.0.2.17"))
    assert [d.desktop_id for d in r.desktops] == [world.d[7]] and r.total_count == 1

    r = c.list_desktops(ListDesktopsRequest(enterprise_project_id="ep-finance"))
    assert ids(r.desktops) == {world.d[1], world.d[2], world.d[3]} and r.total_count == 3
    for d in r.desktops:
        assert d.enterprise_project_id == "ep-finance"

    assert c.list_desktops(ListDesktopsRequest(status="ACTIVE")).total_count == N
    r = c.list_desktops(ListDesktopsRequest(status="SHUTOFF"))
    assert r.total_count == 0 and r.desktops == []

    # another project's desktop id filters to nothing
    r = c.list_desktops(ListDesktopsRequest(desktop_id=sorted(world.other_ids)))
    assert r.total_count == 0 and r.desktops == []


def test_list_desktops_limit_out_of_range(world):
    expect_error(lambda: world.client.list_desktops(ListDesktopsRequest(limit=1001)), 400, "WKS.0001")


def test_list_desktops_detail(world):
    c = world.client
    r = c.list_desktops_detail(ListDesktopsDetailRequest())
    assert r.total_count == N
    assert ids(r.desktops) == world.all_ids
    by_id = {d.desktop_id: d for d in r.desktops}
    d = by_id[world.d[1]]
    assert d.computer_name == "lab-lin-01"
    assert d.status == "ACTIVE"
    assert "192.0.2.11" in (d.ip_addresses or [])
    assert (d.metadata or {}).get("os_type") == "Linux"
    assert d.enterprise_project_id == "ep-finance"
    assert [(t.key, t.value) for t in (d.tags or [])] == [("team", "qa")]
    assert (by_id[world.d[12]].metadata or {}).get("os_type") == "Windows"

    r = c.list_desktops_detail(ListDesktopsDetailRequest(limit=4, offset=8))
    assert r.total_count == N and len(r.desktops) == 4

    r = c.list_desktops_detail(ListDesktopsDetailRequest(desktop_id=[world.d[3], world.d[4]]))
    assert ids(r.desktops) == {world.d[3], world.d[4]} and r.total_count == 2

    r = c.list_desktops_detail(ListDesktopsDetailRequest(computer_name="lab-win-11"))
    assert [x.desktop_id for x in r.desktops] == [world.d[11]]

    assert c.list_desktops_detail(ListDesktopsDetailRequest(limit=500)).total_count == N
    expect_error(lambda: c.list_desktops_detail(ListDesktopsDetailRequest(limit=501)), 400, "WKS.0001")


def test_show_desktop_detail(world):
    c = world.client
    r = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=world.d[9]))
    assert r.status_code == 200
    d = r.desktop
    assert d.desktop_id == world.d[9]
    assert d.computer_name == "lab-win-09"
    assert "192.0.2.19" in (d.ip_addresses or [])
    assert (d.metadata or {}).get("os_type") == "Windows"
    assert d.status == "ACTIVE"

    expect_error(lambda: c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id="no-such-desktop")),
                 404, "WKS.0202")
    other = next(iter(world.other_ids))
    expect_error(lambda: c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=other)), 404, "WKS.0202")


# ------------------------------------------------------------------------ install + jobs


def test_install_and_show_job(world):
    d4, d5 = world.d[4], world.d[5]
    job_id = install(world, d4, d5, d4)  # duplicates collapse
    job = show_job(world, job_id)
    assert job.id == job_id
    assert job.job_type == JOB_TYPE
    assert job.status == "WAITING"  # no desktop daemon picks it up; timeout is 10 min here
    assert not job.end_time
    assert job.sub_jobs_total == 2
    assert len(job.sub_jobs) == 2
    assert {sj.entities.desktop_id for sj in job.sub_jobs} == {d4, d5}
    assert len({sj.id for sj in job.sub_jobs}) == 2
    for sj in job.sub_jobs:
        assert sj.id
        assert sj.job_id == job_id
        assert sj.status == "WAITING"
        assert not sj.error_code


def test_agents_install_condition_listing_filters_paging(world):
    c = world.client
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest())
    assert r.total_count == N
    assert len(r.agents_condition) == 10  # default limit 10

    rest = c.list_agents_install_condition(ListAgentsInstallConditionRequest(offset=10))
    assert rest.total_count == N and len(rest.agents_condition) == N - 10
    assert ids(r.agents_condition) | ids(rest.agents_condition) == world.all_ids

    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(limit=3, offset=3))
    assert r.total_count == N and len(r.agents_condition) == 3

    every = c.list_agents_install_condition(ListAgentsInstallConditionRequest(limit=1000))
    assert ids(every.agents_condition) == world.all_ids
    for a in every.agents_condition:
        spec = world.specs[a.desktop_name]
        assert a.desktop_id == world.by_name[a.desktop_name]
        assert a.ip_address == spec["ip_address"]
        assert a.status == "ACTIVE"
        assert [i.agent_name for i in a.agent_info] == [AGENT_NAME]
        assert a.agent_info[0].is_installed is False
        if "enterprise_project_id" in spec:
            assert a.enterprise_project_id == spec["enterprise_project_id"]

    # desktops 9, 10, 12 and 16 never get a task in this module: idle, process null
    for a in every.agents_condition:
        if a.desktop_id in {world.d[i] for i in (9, 10, 12, 16)}:
            assert a.task_status == ""
            assert a.process is None

    def q(**kw):
        return c.list_agents_install_condition(ListAgentsInstallConditionRequest(limit=1000, **kw))

    r = q(desktop_id=world.d[6])
    assert [a.desktop_id for a in r.agents_condition] == [world.d[6]] and r.total_count == 1
    r = q(desktop_name="lab-win")
    assert ids(r.agents_condition) == {world.d[i] for i in (9, 10, 11, 12)} and r.total_count == 4
    r = q(desktop_name="lin-0")
    assert ids(r.agents_condition) == {world.d[i] for i in range(1, 9)}
    r = q(desktop_name="lab-lin")
    assert ids(r.agents_condition) == {world.d[i] for i in list(range(1, 9)) + list(range(13, N + 1))}
    r = q(ip_address="192.0.2.21")
    assert [a.desktop_id for a in r.agents_condition] == [world.d[11]]
    r = q(enterprise_project_id="ep-finance")
    assert ids(r.agents_condition) == {world.d[1], world.d[2], world.d[3]}
    assert q(status="ACTIVE").total_count == N
    assert q(status="SHUTOFF").total_count == 0
    assert q(is_installed=False).total_count == N
    r = q(is_installed=True)
    assert r.total_count == 0 and r.agents_condition == []
    r = q(desktop_id=next(iter(world.other_ids)))
    assert r.total_count == 0

    expect_error(lambda: c.list_agents_install_condition(ListAgentsInstallConditionRequest(limit=1001)),
                 400, "WKS.0001")


def test_agents_install_condition_shows_queued_task(world):
    d6 = world.d[6]
    install(world, d6)
    r = world.client.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=d6))
    assert r.total_count == 1
    a = r.agents_condition[0]
    assert a.task_status != ""  # a stage such as "queued" while the sub-job waits
    assert a.process is not None and 0 <= a.process <= 100
    assert a.agent_info[0].is_installed is False


def test_sub_jobs_list_filters_paging(world):
    c = world.client
    d7, d8 = world.d[7], world.d[8]
    job_id = install(world, d7, d8)

    r = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id))
    assert r.total_count == 2
    assert {j.entities.desktop_id for j in r.jobs} == {d7, d8}
    for j in r.jobs:
        assert j.job_id == job_id and j.status == "WAITING"
        assert j.job_type in (None, JOB_TYPE)

    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, status="WAITING")).total_count == 2
    r = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, status="SUCCESS"))
    assert r.total_count == 0 and r.jobs == []
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, job_type=JOB_TYPE)).total_count == 2
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, job_type="createDesktops")).total_count == 0

    p1 = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, limit=1, offset=0))
    p2 = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, limit=1, offset=1))
    assert (p1.total_count, len(p1.jobs), p2.total_count, len(p2.jobs)) == (2, 1, 2, 1)
    assert p1.jobs[0].id != p2.jobs[0].id
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, limit=0)).jobs == []

    # every sub-job of the project: the status filter really filters
    everything = c.list_ita_sub_jobs(ListItaSubJobsRequest(limit=1000))
    assert everything.total_count == len(everything.jobs) >= 2
    waiting = c.list_ita_sub_jobs(ListItaSubJobsRequest(status="WAITING", limit=1000))
    assert all(j.status == "WAITING" for j in waiting.jobs)
    assert waiting.total_count == sum(1 for j in everything.jobs if j.status == "WAITING")

    expect_error(lambda: c.list_ita_sub_jobs(ListItaSubJobsRequest(limit=1001)), 400, "WKS.0001")
    expect_error(lambda: c.list_ita_sub_jobs(ListItaSubJobsRequest(offset=10001)), 400, "WKS.0001")


def test_cancel_then_delete_finished_sub_jobs(world):
    c = world.client
    d1 = world.d[1]
    job_id = install(world, d1)
    r = c.run_actions_on_workspace_job(
        RunActionsOnWorkspaceJobRequest(job_id=job_id, body=JobActionsReq(op_type="cancel")))
    assert r.status_code == 200 and r.job_id

    job = show_job(world, job_id)
    assert job.status == "FAIL"
    assert job.end_time
    assert job.sub_jobs_total == 1
    (sj,) = job.sub_jobs
    assert sj.status == "FAILED"
    assert sj.error_code == "WKS.00990003"
    assert sj.fail_reason

    r = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id, status="FAILED"))
    assert r.total_count == 1 and r.jobs[0].id == sj.id

    # repeated status parameter (the SDK turns a list into repeated keys)
    mixed = c.list_ita_sub_jobs(ListItaSubJobsRequest(status=["FAILED", "WAITING"], limit=1000))
    everything = c.list_ita_sub_jobs(ListItaSubJobsRequest(limit=1000))
    assert {j.status for j in mixed.jobs} <= {"FAILED", "WAITING"}
    assert mixed.total_count == sum(1 for j in everything.jobs if j.status in ("FAILED", "WAITING"))
    assert sj.id in ids(mixed.jobs, "id")

    # a WAITING sub-job is not deleted, a FAILED one is
    waiting_job = install(world, world.d[3])
    waiting_sub = show_job(world, waiting_job).sub_jobs[0].id
    r = c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(job_ids=[sj.id, waiting_sub])))
    assert r.status_code == 200
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id)).total_count == 0
    r = c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=waiting_job))
    assert [j.id for j in r.jobs] == [waiting_sub] and r.jobs[0].status == "WAITING"

    # delete_by_status
    job2 = install(world, world.d[2])
    c.run_actions_on_workspace_job(RunActionsOnWorkspaceJobRequest(job_id=job2, body=JobActionsReq(op_type="cancel")))
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(status="FAILED")).total_count >= 1
    r = c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(delete_by_status="FAILED")))
    assert r.status_code == 200
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(status="FAILED")).total_count == 0
    assert c.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=waiting_job)).total_count == 1
    r = c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(delete_by_status="SUCCESS")))
    assert r.status_code == 200


def test_batch_delete_validation(world):
    c = world.client

    def delete(**kw):
        return lambda: c.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(**kw)))

    expect_error(delete(), 400, "WKS.0001")
    expect_error(delete(job_ids=[]), 400, "WKS.0001")
    expect_error(delete(job_ids=[f"sub-{i}" for i in range(11)]), 400, "WKS.0001")
    expect_error(delete(job_ids=["sub-1"], delete_by_status="FAILED"), 400, "WKS.0001")
    expect_error(delete(delete_by_status="WAITING"), 400, "WKS.0001")


def test_job_action_validation(world):
    c = world.client
    job_id = install(world, world.d[11])
    expect_error(lambda: c.run_actions_on_workspace_job(
        RunActionsOnWorkspaceJobRequest(job_id=job_id, body=JobActionsReq(op_type="explode"))), 400, "WKS.0001")
    assert show_job(world, job_id).status == "WAITING"


def test_show_job_unknown(world):
    expect_error(lambda: world.client.show_job(ShowJobRequest(job_id="no-such-job")), 404, "WKS.0202")


# ------------------------------------------------------------------------ install validation


def test_install_rejects_bad_id_lists(world):
    c = world.client

    def call(desktop_ids):
        return lambda: c.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=desktop_ids)))

    expect_error(call([]), 400, "WKS.0001")
    expect_error(call([f"desk-{i}" for i in range(101)]), 400, "WKS.0001")
    expect_error(call(["x" * 256]), 400, "WKS.0001")


def test_install_unknown_desktops_listed_in_error_detail(world):
    c = world.client
    e = expect_error(lambda: c.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=[world.d[10], "ghost-1", "ghost-2"]))), 400, "WKS.0001")
    detail = e.body.get("error_detail", "")
    assert set(detail.split(",")) == {"ghost-1", "ghost-2"}, e.body

    other = next(iter(world.other_ids))
    e = expect_error(lambda: c.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=[world.d[10], other]))), 400, "WKS.0001")
    assert e.body.get("error_detail") == other, e.body
    # nothing was created for the valid desktop of a rejected request
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=world.d[10]))
    assert r.agents_condition[0].task_status == "" and r.agents_condition[0].process is None


def test_100_ids_pass_the_size_check(world):
    # 100 ids (all distinct strings, only 16 real desktops) is within the size limit, so the
    # size check passes and the unknown ones are reported.
    ids_ = [world.d[10]] + [f"ghost-{i:03d}" for i in range(99)]
    e = expect_error(lambda: world.client.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=ids_))), 400, "WKS.0001")
    assert set(e.body.get("error_detail", "").split(",")) == set(ids_[1:]), e.body


# ------------------------------------------------------------------------ raw wire checks


def test_request_id_header_on_success_and_error(world):
    s = world.server
    ok = raw("GET", s, f"/v2/{world.pid}/desktops", query=[("limit", 1)], project_id=world.pid)
    assert ok.status_code == 200, ok.text
    assert ok.headers.get("X-Request-Id")
    assert ok.json()["total_count"] == N

    bad = raw("GET", s, f"/v2/{world.pid}/workspace-jobs/nope", project_id=world.pid)
    assert bad.status_code == 404 and bad.headers.get("X-Request-Id")
    assert bad.json()["error_code"] == "WKS.0202" and bad.json()["error_msg"]


def test_unknown_path_is_apigw_0101(world):
    s = world.server
    r = raw("GET", s, f"/v2/{world.pid}/no-such-api", project_id=world.pid)
    assert r.status_code == 404, r.text
    assert r.headers.get("X-Request-Id")
    assert r.json()["error_code"] == "APIGW.0101" and r.json()["error_msg"]

    r = raw("GET", s, "/totally/unknown", sign=False)
    assert r.status_code == 404, r.text
    assert r.json()["error_code"] == "APIGW.0101"
    assert r.headers.get("X-Request-Id")


# ------------------------------------------------------------------------ isolation, retry


def test_other_projects_jobs_are_invisible(world):
    s = world.server
    job_id = install(world, world.d[13])
    sub_ids = [sj.id for sj in show_job(world, job_id).sub_jobs]
    s.create_user("b-admin", world.other_pid, "admin")
    key = s.create_access_key("b-admin", world.other_pid)
    b = s.workspace(ak=key["access_key"], sk=key["secret_key"], project_id=world.other_pid)

    assert b.list_desktops(ListDesktopsRequest()).total_count == 2
    expect_error(lambda: b.show_job(ShowJobRequest(job_id=job_id)), 404, "WKS.0202")
    expect_error(lambda: b.run_actions_on_workspace_job(RunActionsOnWorkspaceJobRequest(
        job_id=job_id, body=JobActionsReq(op_type="cancel"))), 404, "WKS.0202")
    assert b.list_ita_sub_jobs(ListItaSubJobsRequest(job_id=job_id)).total_count == 0
    b.batch_delete_sub_jobs(BatchDeleteSubJobsRequest(body=DeleteSubJobsReq(job_ids=sub_ids)))
    # project A's job is untouched
    job = show_job(world, job_id)
    assert job.status == "WAITING" and [sj.id for sj in job.sub_jobs] == sub_ids
    # and project B cannot install on A's desktops
    e = expect_error(lambda: b.batch_install_agent(BatchInstallAgentRequest(
        body=BatchInstallAgentReq(desktop_ids=[world.d[9]]))), 400, "WKS.0001")
    assert e.body.get("error_detail") == world.d[9], e.body
    # B's own desktops install fine
    r = b.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=sorted(world.other_ids))))
    assert b.show_job(ShowJobRequest(job_id=r.job_id)).sub_jobs_total == 2


def test_retry_of_a_waiting_job_changes_nothing(world):
    job_id = install(world, world.d[14])
    before = show_job(world, job_id)
    r = world.client.run_actions_on_workspace_job(
        RunActionsOnWorkspaceJobRequest(job_id=job_id, body=JobActionsReq(op_type="retry")))
    assert r.status_code == 200 and r.job_id
    after = show_job(world, job_id)
    assert after.status == "WAITING"
    assert [(x.id, x.status) for x in after.sub_jobs] == [(x.id, x.status) for x in before.sub_jobs]


def test_sub_job_entities_describe_the_desktop(world):
    job_id = install(world, world.d[15])
    (sj,) = show_job(world, job_id).sub_jobs
    assert sj.entities.desktop_id == world.d[15]
    if sj.entities.desktop_name is not None:
        assert sj.entities.desktop_name == "lab-lin-15"
    if sj.entities.ip_address is not None:
        assert sj.entities.ip_address == "192.0.2.25"
