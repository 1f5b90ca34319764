"""``GET /metrics`` after a REAL install, read with the Prometheus project's own text-format
parser (``prometheus_client.parser``).

Two real ``deskfleet-guest`` processes enroll with a real server; the agent is installed on
both through the unchanged Workspace SDK (the flow of ``test_fleet_install.py``). The
scrape must then say what happened, in values: the BatchInstallAgent route (by its template,
never the raw path) counted exactly the calls made, ShowJob exactly the polls made, the
latency histogram holds every one of them, and the job gauges count the sub-jobs that
succeeded, one per desktop installed.
"""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListDesktopsRequest,
    ShowJobRequest,
)
from prometheus_client.parser import text_string_to_metric_families

from harness import Guest, raw, wait_for

N = 2
HOSTNAMES = [f"metrics-desk-{i}" for i in range(1, N + 1)]
CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100, "metrics_min_interval_ms": 0},
    # Job gauges counted at every scrape: each scrape must see what was just done.
    "metrics": {"job_count_interval_ms": 0},
}
INSTALL_ROUTE = "/v2/{project_id}/desktops/agents"
SHOW_JOB_ROUTE = "/v2/{project_id}/workspace-jobs/{job_id}"
ENROLL_DEADLINE_S = 30
INSTALL_DEADLINE_S = 90


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(module_server_factory, tmp_path_factory):
    f = Fleet()
    f.server = s = module_server_factory("metrics", CONFIG)
    f.client = s.workspace()
    token = s.create_enrollment_token()["enrollment_token"]
    states = tmp_path_factory.mktemp("metrics-guests")
    f.guests = []
    try:
        for i, name in enumerate(HOSTNAMES, start=1):
            f.guests.append(Guest(s, token, states / f"state-{i}", name).start())
        r = wait_for(lambda: f.client.list_desktops(ListDesktopsRequest()), lambda r: r.total_count >= N,
                     timeout=ENROLL_DEADLINE_S, what=f"{N} guests to enroll", interval=0.2)
        f.ids = sorted(d.desktop_id for d in r.desktops)
        assert len(f.ids) == N
        yield f
    finally:
        for g in f.guests:
            g.stop()


def diagnostics(f: Fleet) -> str:
    parts = [f"--- server log\n{f.server.log_tail()}"]
    parts += [f"--- guest {g.hostname}\n{g.log_tail()}" for g in f.guests]
    return "\n".join(parts)


def scrape(server):
    """The families of one scrape, by name, parsed by prometheus_client."""
    resp = raw("GET", server, "/metrics", sign=False)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"), resp.headers
    return {fam.name: fam for fam in text_string_to_metric_families(resp.text)}


def value(families, family: str, sample: str, **labels) -> float:
    """The value of the sample ``sample`` of ``family`` whose labels include ``labels``;
    0 when the series does not exist yet (a counter nobody incremented)."""
    fam = families.get(family)
    if fam is None:
        return 0.0
    found = [s.value for s in fam.samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{sample}{labels} matches several series: {found}"
    return found[0] if found else 0.0


def install_and_count_polls(f: Fleet):
    """BatchInstallAgent once, then ShowJob until it ends; returns the job and the polls."""
    r = f.client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=f.ids)))
    assert r.job_id, r
    polls = 0
    deadline = time.monotonic() + INSTALL_DEADLINE_S
    while True:
        job = f.client.show_job(ShowJobRequest(job_id=r.job_id))
        polls += 1
        if job.status in ("SUCCESS", "FAIL"):
            return job, polls
        assert time.monotonic() < deadline, f"job {r.job_id} still {job.status}\n{diagnostics(f)}"
        time.sleep(0.2)


def test_metrics_after_a_real_install_say_what_happened(fleet):
    f = fleet
    before = scrape(f.server)
    job, polls = install_and_count_polls(f)
    assert job.status == "SUCCESS", f"{job}\n{diagnostics(f)}"
    after = scrape(f.server)

    requests = "deskfleet_http_requests"  # the family name drops the _total suffix
    install = {"method": "POST", "route": INSTALL_ROUTE, "status": "200"}
    show = {"method": "GET", "route": SHOW_JOB_ROUTE, "status": "200"}

    def delta(family, sample, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    assert after[requests].type == "counter"
    assert delta(requests, "deskfleet_http_requests_total", **install) == 1
    assert delta(requests, "deskfleet_http_requests_total", **show) == polls

    hist = "deskfleet_http_request_duration_seconds"
    assert after[hist].type == "histogram", after[hist].type
    assert delta(hist, f"{hist}_count", **install) == 1
    assert delta(hist, f"{hist}_bucket", le="+Inf", **install) == 1
    assert delta(hist, f"{hist}_count", **show) == polls
    assert delta(hist, f"{hist}_sum", **install) > 0
    # Buckets are cumulative and end with the count.
    buckets = sorted((float(s.labels["le"]), s.value) for s in after[hist].samples
                     if s.name == f"{hist}_bucket" and all(s.labels.get(k) == v for k, v in show.items()))
    assert [b for _, b in buckets] == sorted(b for _, b in buckets)
    assert buckets[-1] == (float("inf"), value(after, hist, f"{hist}_count", **show))

    # Every label is a template or a fixed word: no project, job or desktop id leaks in.
    for fam in after.values():
        for s in fam.samples:
            for v in s.labels.values():
                assert f.server.project_id not in v and job.id not in v, (s.name, s.labels)
                assert not any(d in v for d in f.ids), (s.name, s.labels)

    # The gauges come from the database: one SUCCESS sub-job per desktop installed.
    assert after["deskfleet_sub_jobs"].type == "gauge"
    assert value(after, "deskfleet_sub_jobs", "deskfleet_sub_jobs", state="SUCCESS") == N
    for state in ("WAITING", "RUNNING", "FAILED"):
        assert value(after, "deskfleet_sub_jobs", "deskfleet_sub_jobs", state=state) == 0, state
    assert value(after, "deskfleet_jobs", "deskfleet_jobs", state="SUCCESS") == 1
    for state in ("WAITING", "RUNNING", "FAIL"):
        assert value(after, "deskfleet_jobs", "deskfleet_jobs", state=state) == 0, state

    # A second call: the route counts it, and the gauges count both jobs.
    again, _ = install_and_count_polls(f)
    assert again.status == "SUCCESS", again
    last = scrape(f.server)
    assert value(last, requests, "deskfleet_http_requests_total", **install) \
        - value(before, requests, "deskfleet_http_requests_total", **install) == 2
    assert value(last, "deskfleet_sub_jobs", "deskfleet_sub_jobs", state="SUCCESS") == 2 * N
    assert value(last, "deskfleet_jobs", "deskfleet_jobs", state="SUCCESS") == 2
