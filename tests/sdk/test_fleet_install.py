"""An agent install end to end, through the unchanged Workspace SDK, on real desktops.

Three real ``deskfleet-guest`` processes (one state directory each, host names
``sdk-desk-1..3``) enroll with a real server using an enrollment token from ``admin
enrollment-tokens create``. Then, through the SDK only: the desktops appear in
ListDesktops; BatchInstallAgent on them succeeds (every sub-job SUCCESS at process 100);
ListAgentsInstallCondition shows the monitor's own version installed; the monitoring agent
really runs (a ``deskfleet-monitor`` child of each guest, from the guest's install root);
its figures are served at ``GET /v2/{project_id}/desktop-monitor/{desktop_id}`` (a deskfleet
extension, requested with the SDK's own signer); installing again succeeds at once without
restarting the agent; and SIGTERM stops each guest together with its monitor.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListAgentsInstallConditionRequest,
    ListDesktopsRequest,
    ShowDesktopDetailRequest,
    ShowJobRequest,
)

import harness
from harness import Guest, raw, wait_for

N = 3
HOSTNAMES = [f"sdk-desk-{i}" for i in range(1, N + 1)]
JOB_TYPE = "batchInstallCesAgent"
AGENT_NAME = "deskfleet-monitor"
CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100, "metrics_min_interval_ms": 0},
}
ENROLL_DEADLINE_S = 30
INSTALL_DEADLINE_S = 90
REINSTALL_DEADLINE_S = 10  # "at once": no download, no restart
METRICS_DEADLINE_S = 20
API_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def monitor_version() -> str:
    out = subprocess.run([harness.sibling_bin(AGENT_NAME), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    m = re.fullmatch(r"deskfleet-monitor (\S+)", out)
    assert m, f"unexpected `deskfleet-monitor --version` output: {out!r}"
    return m.group(1)


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(module_server_factory, tmp_path_factory):
    f = Fleet()
    f.server = s = module_server_factory("fleet-install", CONFIG)
    f.client = s.workspace()
    f.version = monitor_version()
    token = s.create_enrollment_token()
    assert set(token) >= {"enrollment_token", "project_id", "expires_at"}, token
    assert token["project_id"] == s.project_id, token
    assert token["enrollment_token"].startswith("DFE1"), "documented prefix of an enrollment token"
    states = tmp_path_factory.mktemp("guests")
    f.guests = []
    try:
        for i, name in enumerate(HOSTNAMES, start=1):
            f.guests.append(Guest(s, token["enrollment_token"], states / f"state-{i}", name).start())
        yield f
    finally:
        for g in f.guests:
            g.stop()
        seen = {pid for g in f.guests for pid in g.seen_monitors}
        wait_for(lambda: {pid for pid in seen if harness.alive(pid)}, lambda left: not left, timeout=5,
                 what="no deskfleet-monitor process to survive the teardown")


def diagnostics(f: Fleet) -> str:
    parts = [f"--- server log\n{f.server.log_tail()}"]
    parts += [f"--- guest {g.hostname} (pid {g.pid}, exit {g.proc.poll()})\n{g.log_tail()}" for g in f.guests]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def enrolled(fleet):
    """The three desktops, once their guests have enrolled and connected (a guest enrolls
    over HTTP first and opens its connection after): ``{hostname: desktop_id}``."""
    c = fleet.client

    def all_online(r) -> bool:
        return r.total_count >= N and all(d.status == "ACTIVE" for d in r.desktops)

    try:
        r = wait_for(lambda: c.list_desktops(ListDesktopsRequest()), all_online,
                     timeout=ENROLL_DEADLINE_S, what=f"{N} guests to enroll and connect", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnostics(fleet)}") from None
    assert r.total_count == N, r
    fleet.by_name = {d.computer_name: d.desktop_id for d in r.desktops}
    assert set(fleet.by_name) == set(HOSTNAMES), r.desktops
    fleet.ids = [fleet.by_name[n] for n in HOSTNAMES]
    return fleet


def show(f: Fleet, job_id: str):
    return f.client.show_job(ShowJobRequest(job_id=job_id))


def install(f: Fleet, deadline_s: float):
    started = time.monotonic()
    r = f.client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=f.ids)))
    assert r.status_code == 200 and r.job_id, r
    try:
        job = wait_for(lambda: show(f, r.job_id), lambda j: j.status in ("SUCCESS", "FAIL"),
                       timeout=deadline_s, what=f"install job {r.job_id} to end", interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{diagnostics(f)}") from None
    return job, time.monotonic() - started


def assert_succeeded(f: Fleet, job) -> None:
    assert job.status == "SUCCESS", f"{job}\n{diagnostics(f)}"
    assert job.job_type == JOB_TYPE
    assert not job.job_error_code and not job.fail_reason, job
    assert job.begin_time and API_TIME.match(job.begin_time), job.begin_time
    assert job.end_time and API_TIME.match(job.end_time), job.end_time
    assert job.sub_jobs_total == N and len(job.sub_jobs) == N, job
    assert {sj.entities.desktop_id for sj in job.sub_jobs} == set(f.ids)
    for sj in job.sub_jobs:
        assert sj.status == "SUCCESS", sj
        assert sj.process == 100, sj
        assert not sj.error_code, sj
        assert sj.end_time, sj


@pytest.fixture(scope="module")
def installed(enrolled):
    """The first install on the three desktops, run once for the module."""
    f = enrolled
    f.first_job, f.first_install_s = install(f, INSTALL_DEADLINE_S)
    assert_succeeded(f, f.first_job)
    return f


# ------------------------------------------------------------------------------ tests


def test_guests_enroll_and_are_listed(enrolled):
    f, c = enrolled, enrolled.client
    r = c.list_desktops(ListDesktopsRequest())
    assert r.total_count == N
    for d in r.desktops:
        assert d.status == "ACTIVE", d
        assert d.computer_name in HOSTNAMES
    for name in HOSTNAMES:  # the host name the guest reported is the computer name
        r = c.list_desktops(ListDesktopsRequest(computer_name=name))
        assert [d.desktop_id for d in r.desktops] == [f.by_name[name]]
        detail = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=f.by_name[name])).desktop
        assert detail.computer_name == name
        assert (detail.metadata or {}).get("os_type") == "Linux", detail.metadata
    # nothing installed yet
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(is_installed=True))
    assert r.total_count == 0, r


def test_batch_install_succeeds_on_every_desktop(installed):
    f = installed
    job = show(f, f.first_job.id)  # read again: a finished job stays as it ended
    assert_succeeded(f, job)
    assert job.end_time == f.first_job.end_time


def test_agents_are_reported_installed_with_the_monitor_version(installed):
    f, c = installed, installed.client
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(is_installed=True))
    assert r.total_count == N, r
    assert {a.desktop_id for a in r.agents_condition} == set(f.ids)
    for a in r.agents_condition:
        assert a.desktop_name in HOSTNAMES
        assert a.task_status == "", a  # no install in flight any more
        assert len(a.agent_info) == 1, a
        info = a.agent_info[0]
        assert info.agent_name == AGENT_NAME, info
        assert info.is_installed is True, info
        assert info.agent_version == f.version, info
    r = c.list_agents_install_condition(ListAgentsInstallConditionRequest(is_installed=False))
    assert r.total_count == 0, r
    for desktop_id in f.ids:
        detail = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=desktop_id)).desktop
        assert detail.agent_version == f.version, detail


def test_the_agent_process_really_runs(installed):
    f = installed
    for g in f.guests:
        assert g.proc.poll() is None, f"guest {g.hostname} exited:\n{g.log_tail()}"
        monitors = wait_for(g.monitors, lambda m: len(m) >= 1, timeout=10,
                            what=f"a deskfleet-monitor child of guest {g.hostname} (pid {g.pid})")
        assert len(monitors) == 1, f"guest {g.hostname} runs several monitors: {monitors}"
        (pid, exe), = monitors.items()
        assert harness.proc_ppid(pid) == g.pid
        # run from what the guest unpacked from the package, not from the build directory
        root = str(g.install_root.resolve())
        assert exe.startswith(root + "/"), f"monitor of {g.hostname} runs {exe}, outside {root}"
        assert f"/{f.version}/" in exe, exe


def desktop_monitor(f: Fleet, desktop_id: str):
    return raw("GET", f.server, f"/v2/{f.server.project_id}/desktop-monitor/{desktop_id}")


def proc_stat_cores() -> int:
    with open("/proc/stat") as stat:
        return sum(1 for line in stat if re.match(r"cpu\d+ ", line))


def proc_meminfo_total_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def test_monitor_figures_are_served(installed):
    f = installed
    cores, mem_total = proc_stat_cores(), proc_meminfo_total_bytes()
    for name, desktop_id in f.by_name.items():
        resp = wait_for(lambda: desktop_monitor(f, desktop_id),
                        lambda r: r.status_code != 200 or r.json().get("metrics") is not None,
                        timeout=METRICS_DEADLINE_S, what=f"metrics of {name}", interval=0.2)
        assert resp.status_code == 200, resp.text
        assert resp.headers.get("Content-Type", "").startswith("application/json")
        assert resp.headers.get("X-Request-Id")
        body = resp.json()
        assert set(body) >= {"desktop_id", "agent", "metrics_reported_at", "metrics"}, body
        assert body["desktop_id"] == desktop_id

        agent = body["agent"]
        assert agent is not None, body
        assert agent["agent_name"] == AGENT_NAME, agent
        assert agent["agent_version"] == f.version, agent
        assert agent["healthy"] is True, agent
        assert API_TIME.match(agent["reported_at"]), agent
        assert API_TIME.match(body["metrics_reported_at"]), body

        m = body["metrics"]
        assert m["agent"] == AGENT_NAME and m["version"] == f.version, m
        assert m["collected_at_ms"] > 0 and m["interval_ms"] > 0, m
        cpu = m["cpu"]
        assert cpu is not None, m.get("errors")
        assert cpu["cores"] >= 1 and cpu["cores"] == cores, cpu
        assert 0 <= cpu["usage_percent"] <= 100, cpu
        mem = m["memory"]
        assert mem is not None, m.get("errors")
        assert mem["total_bytes"] > 0 and mem["total_bytes"] == mem_total, mem
        assert 0 <= mem["available_bytes"] <= mem["total_bytes"], mem
        assert 0 <= mem["used_percent"] <= 100, mem
        assert isinstance(m["disks"], list) and isinstance(m["network"], list), m
        for d in m["disks"]:
            assert d["mount_point"].startswith("/") and d["total_bytes"] > 0, d
            assert 0 <= d["used_percent"] <= 100, d
        for n in m["network"]:
            assert n["interface"] and n["interface"] != "lo", n
            assert n["rx_bytes"] >= 0 and n["tx_bytes"] >= 0, n
        assert m["self"]["rss_bytes"] > 0, m["self"]

    # the figures keep coming: a later sample replaces the one served
    desktop_id = f.ids[0]
    first = desktop_monitor(f, desktop_id).json()["metrics"]["collected_at_ms"]
    wait_for(lambda: desktop_monitor(f, desktop_id).json()["metrics"]["collected_at_ms"], lambda t: t > first,
             timeout=METRICS_DEADLINE_S, what="a newer sample than the first one served", interval=0.2)


def test_desktop_monitor_of_an_unknown_desktop_is_404(installed):
    f = installed
    resp = raw("GET", f.server, f"/v2/{f.server.project_id}/desktop-monitor/no-such-desktop")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error_code"] == "WKS.0202", resp.text


def test_installing_again_succeeds_at_once_without_restarting_the_agent(installed):
    f = installed
    before = {}
    for g in f.guests:
        monitors = wait_for(g.monitors, lambda m: len(m) == 1, timeout=10, what=f"the monitor of {g.hostname}")
        before[g.hostname] = set(monitors)
    job, took = install(f, REINSTALL_DEADLINE_S)
    assert job.id != f.first_job.id
    assert_succeeded(f, job)
    assert took < REINSTALL_DEADLINE_S, took
    time.sleep(1.0)  # a restart, if one were to happen, would show by now (300 ms sampling)
    for g in f.guests:
        assert set(g.monitors()) == before[g.hostname], f"the monitor of {g.hostname} was restarted"
    r = f.client.list_agents_install_condition(ListAgentsInstallConditionRequest(is_installed=True))
    assert r.total_count == N and {a.agent_info[0].agent_version for a in r.agents_condition} == {f.version}


def test_sigterm_stops_each_guest_and_its_monitor(installed):
    """Last in the module: it stops the guests."""
    f = installed
    monitors = {}
    for g in f.guests:
        monitors[g.hostname] = set(wait_for(g.monitors, lambda m: len(m) == 1, timeout=10,
                                            what=f"the monitor of {g.hostname}"))
    codes = {g.hostname: g.terminate(timeout=15) for g in f.guests}
    assert codes == {name: 0 for name in HOSTNAMES}, f"exit statuses after SIGTERM: {codes}\n{diagnostics(f)}"
    for name, pids in monitors.items():
        left = wait_for(lambda: {p for p in pids if harness.alive(p)}, lambda s: not s, timeout=5,
                        what=f"the monitor of {name} to stop with its guest")
        assert not left
