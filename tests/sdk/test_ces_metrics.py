"""Cloud Eye's metric API (v1) through the unchanged ``huaweicloudsdkces`` client, on the
figures of REAL desktops.

Two real ``deskfleet-guest`` processes enroll; the monitoring agent is installed on both
through the Workspace SDK and reports every 300 ms. Its reports become ``AGT.ECS`` time
series, read back with ShowMetricData, BatchListMetricData and ListMetrics, with AK/SK and
with an IAM token; the figures must be the ones the desktop reported (compared with the
monitor API's latest report), and another project must see none of them.
"""

from __future__ import annotations

import re
import time

import pytest
from huaweicloudsdkces.v1 import (
    BatchListMetricDataRequest,
    BatchListMetricDataRequestBody,
    CesClient,
    ListMetricsRequest,
    MetricInfo,
    MetricsDimension,
    ShowMetricDataRequest,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListDesktopsRequest,
    ShowJobRequest,
)

from harness import Guest, ProjectTokenCredentials, RecordingExceptionHandler, expect_error, raw, wait_for
from test_token import get_token

N = 2
CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100, "metrics_min_interval_ms": 0},
    # Raw data is one row per series and minute, written as soon as the minute has ended.
    "metric_data": {"flush_interval_ms": 100, "minute_grace_secs": 0},
    # Many reads per test: the per-user read limit is not what is tested here.
    "throttle": {"enabled": False},
}
NS = "AGT.ECS"
ENROLL_DEADLINE_S = 30
INSTALL_DEADLINE_S = 90
# A desktop's first minute is written once it has ended.
DATA_DEADLINE_S = 100
PERIODS = [1, 60, 300, 1200, 3600, 14400, 86400]
FILTERS = ["average", "max", "min", "sum", "variance"]
EXPECTED_UNITS = {
    "cpu_usage": "%", "cpu_usage_idle": "%", "cpu_usage_user": "%", "cpu_usage_system": "%",
    "cpu_usage_other": "%", "load_average1": "", "load_average5": "", "load_average15": "",
    "mem_usedPercent": "%", "mem_available": "GB", "disk_usedPercent": "%", "disk_free": "GB",
    "disk_total": "GB", "disk_used": "GB", "net_bitSent": "bit/s", "net_bitRecv": "bit/s",
}


def ces_client(server, ak=None, sk=None, project_id=None) -> CesClient:
    return (CesClient.new_builder()
            .with_http_config(server.http_config())
            .with_credentials(BasicCredentials(ak or server.ak, sk or server.sk, project_id or server.project_id))
            .with_endpoint(server.endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


def token_ces_client(server, token, project_id=None) -> CesClient:
    client = ces_client(server, "token-mode-unused-ak", "token-mode-unused-sk", project_id)
    client.with_credentials(ProjectTokenCredentials(token, project_id or server.project_id))
    return client


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(module_server_factory, tmp_path_factory):
    f = Fleet()
    f.server = s = module_server_factory("ces-metrics", CONFIG)
    f.ws = s.workspace()
    f.ces = ces_client(s)
    token = s.create_enrollment_token()["enrollment_token"]
    states = tmp_path_factory.mktemp("ces-metrics-guests")
    f.guests = []
    try:
        for i in range(1, N + 1):
            f.guests.append(Guest(s, token, states / f"state-{i}", f"ces-desk-{i}").start())
        r = wait_for(lambda: f.ws.list_desktops(ListDesktopsRequest()), lambda r: r.total_count >= N,
                     timeout=ENROLL_DEADLINE_S, what=f"{N} guests to enroll", interval=0.2)
        f.ids = sorted(d.desktop_id for d in r.desktops)
        job = f.ws.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=f.ids)))
        wait_for(lambda: f.ws.show_job(ShowJobRequest(job_id=job.job_id)),
                 lambda j: j.status in ("SUCCESS", "FAIL"), timeout=INSTALL_DEADLINE_S,
                 what="the install to end", interval=0.2)
        # Every desktop's first minute of reports is written.
        for d in f.ids:
            wait_for(lambda d=d: show(f.ces, "cpu_usage", d, period=1), lambda r: len(r.datapoints) >= 1,
                     timeout=DATA_DEADLINE_S, what=f"points of {d}", interval=0.2)
        other = s.create_project("ces-other")
        f.other_pid = other["project_id"]
        s.create_user("ces-other-admin", f.other_pid, "admin")
        key = s.create_access_key("ces-other-admin", f.other_pid)
        f.other = ces_client(s, key["access_key"], key["secret_key"], f.other_pid)
        yield f
    finally:
        for g in f.guests:
            g.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def show(client, metric, desktop, period=1, flt="average", mount=None, frm=None, to=None, ns=NS):
    return client.show_metric_data(ShowMetricDataRequest(
        namespace=ns, metric_name=metric, dim_0=f"instance_id,{desktop}",
        dim_1=f"mount_point,{mount}" if mount else None, filter=flt, period=period,
        _from=frm if frm is not None else now_ms() - 3_600_000, to=to if to is not None else now_ms() + 60_000))


def metric(name, desktop, mount=None):
    dims = [MetricsDimension(name="instance_id", value=desktop)]
    if mount:
        dims.append(MetricsDimension(name="mount_point", value=mount))
    return MetricInfo(namespace=NS, metric_name=name, dimensions=dims)


def latest_report(f, desktop) -> dict:
    r = raw("GET", f.server, f"/v2/{f.server.project_id}/desktop-monitor/{desktop}")
    assert r.status_code == 200, r.text
    return r.json()["metrics"]


def root_mount(f, desktop) -> str:
    """The mount_point id of the desktop's first file system, from ListMetrics."""
    r = f.ces.list_metrics(ListMetricsRequest(namespace=NS, metric_name="disk_usedPercent",
                                              dim_0=f"instance_id,{desktop}"))
    assert r.metrics, "no disk series"
    return [d.value for d in r.metrics[0].dimensions if d.name == "mount_point"][0]


def test_list_metrics_names_units_dimensions(fleet):
    f = fleet
    r = f.ces.list_metrics(ListMetricsRequest(namespace=NS, dim_0=f"instance_id,{f.ids[0]}"))
    names = {m.metric_name for m in r.metrics}
    # The recommended minimum set is there (user/system CPU from this monitor too).
    for name in ["cpu_usage", "cpu_usage_user", "cpu_usage_system", "cpu_usage_idle", "load_average1",
                 "load_average5", "load_average15", "mem_usedPercent", "mem_available", "disk_usedPercent",
                 "disk_free", "disk_total", "disk_used", "net_bitSent", "net_bitRecv"]:
        assert name in names, f"{name} missing from {sorted(names)}"
    for m in r.metrics:
        assert m.namespace == NS
        assert m.unit == EXPECTED_UNITS[m.metric_name], m
        dims = {d.name: d.value for d in m.dimensions}
        assert dims["instance_id"] == f.ids[0]
        assert m.dimensions[0].name == "instance_id"
        if m.metric_name.startswith("disk_"):
            assert re.fullmatch(r"[0-9a-f]{32}", dims["mount_point"]), dims
        else:
            assert set(dims) == {"instance_id"}
    assert r.meta_data.count == len(r.metrics) == r.meta_data.total


def test_list_metrics_pages_with_start_and_marker(fleet):
    f = fleet
    everything = f.ces.list_metrics(ListMetricsRequest(start=""))
    assert everything.meta_data.total == len(everything.metrics) > 2 * 10
    seen, start = [], ""
    while True:
        page = f.ces.list_metrics(ListMetricsRequest(start=start, limit=7))
        assert page.meta_data.total == everything.meta_data.total
        assert page.meta_data.count == len(page.metrics) <= 7
        if not page.metrics:
            break
        seen += [(m.metric_name, tuple((d.name, d.value) for d in m.dimensions)) for m in page.metrics]
        start = page.meta_data.marker
        assert start.startswith(f"{NS}.{page.metrics[-1].metric_name}.instance_id:")
    key = lambda m: (m.metric_name, tuple((d.name, d.value) for d in m.dimensions))  # noqa: E731
    assert seen == [key(m) for m in everything.metrics], "pages cover every series once, in order"
    desc = f.ces.list_metrics(ListMetricsRequest(order="desc"))
    assert [key(m) for m in desc.metrics] == [key(m) for m in reversed(everything.metrics)]
    one = f.ces.list_metrics(ListMetricsRequest(metric_name="cpu_usage"))
    assert {[d.value for d in m.dimensions][0] for m in one.metrics} == set(f.ids)
    assert f.ces.list_metrics(ListMetricsRequest(namespace="SYS.ECS")).metrics == []
    expect_error(lambda: f.ces.list_metrics(ListMetricsRequest(limit=1001)), 400, "ces.0013")
    expect_error(lambda: f.ces.list_metrics(ListMetricsRequest(limit=0)), 400, "ces.0013")
    expect_error(lambda: f.ces.list_metrics(ListMetricsRequest(order="sideways")), 400, "ces.0013")
    expect_error(lambda: f.ces.list_metrics(ListMetricsRequest(start="not-a-marker")), 400, "ces.0006")


def test_show_metric_data_gives_the_desktops_own_figures(fleet):
    f = fleet
    d = f.ids[0]
    report = latest_report(f, d)
    at = report["collected_at_ms"]
    # The report counts in the raw minute it falls in, written once that minute has ended.
    minute = at // 60_000 * 60_000
    frm, to = minute, minute + 60_000
    r = wait_for(lambda: show(f.ces, "mem_usedPercent", d, period=1, frm=frm, to=to),
                 lambda r: len(r.datapoints) == 1, timeout=DATA_DEADLINE_S,
                 what="the report's minute", interval=0.2)
    assert r.metric_name == "mem_usedPercent"
    assert [(p.timestamp, p.unit) for p in r.datapoints] == [(minute, "%")]

    def within(metric, value, mount=None):
        lo = show(f.ces, metric, d, period=60, flt="min", mount=mount, frm=frm, to=to).datapoints[0].min
        hi = show(f.ces, metric, d, period=60, flt="max", mount=mount, frm=frm, to=to).datapoints[0].max
        return lo - 1e-9 <= value <= hi + 1e-9

    assert within("mem_usedPercent", report["memory"]["used_percent"])
    assert within("cpu_usage", report["cpu"]["usage_percent"])
    mount = root_mount(f, d)
    assert any(within("disk_usedPercent", x["used_percent"], mount) for x in report["disks"])
    total = show(f.ces, "disk_total", d, period=1, mount=mount, frm=frm, to=to).datapoints[0]
    assert any(total.average == pytest.approx(x["total_bytes"] / 2**30) for x in report["disks"])
    assert total.unit == "GB"


def test_every_filter_and_period(fleet):
    f = fleet
    d = f.ids[1]
    to = now_ms() + 60_000
    frm = to - 3_600_000
    raw_points = show(f.ces, "cpu_usage", d, period=1, frm=frm, to=to).datapoints
    values = [p.average for p in raw_points]
    assert len(values) >= 1
    assert all(p.timestamp % 60_000 == 0 for p in raw_points), "raw data is one point a minute"
    assert all(p.max is None and p.min is None for p in raw_points), "period 1 answers average only"
    for period in PERIODS[1:]:
        for flt in FILTERS:
            r = show(f.ces, "cpu_usage", d, period=period, flt=flt, frm=frm, to=to)
            assert r.datapoints, (period, flt)
            for p in r.datapoints:
                assert p.timestamp % (period * 1000) == 0, (period, p)
                assert getattr(p, flt) is not None, (period, flt, p)
                assert p.unit == "%"
                others = [x for x in FILTERS if x != flt]
                assert all(getattr(p, x) is None for x in others), p
    # The 1-day bucket holds every raw minute of the last hour (and perhaps earlier ones).
    day = lambda flt: show(f.ces, "cpu_usage", d, period=86400, flt=flt, frm=frm, to=to).datapoints  # noqa: E731
    assert day("max")[-1].max >= max(values) - 1e-9
    assert day("min")[-1].min <= min(values) + 1e-9
    assert day("sum")[-1].sum >= sum(values) - 1e-6
    assert day("variance")[-1].variance >= 0
    # from is rounded down: a range inside one minute still answers that minute.
    first = raw_points[0].timestamp
    r = show(f.ces, "cpu_usage", d, period=60, frm=first + 1, to=first + 2)
    assert [p.timestamp for p in r.datapoints] == [first // 60_000 * 60_000]


def test_show_metric_data_errors(fleet):
    f = fleet
    d = f.ids[0]
    expect_error(lambda: show(f.ces, "cpu_usage", d, period=10086), 400, "ces.0013")
    expect_error(lambda: show(f.ces, "cpu_usage", d, period=120), 400, "ces.0013")
    expect_error(lambda: show(f.ces, "cpu_usage", d, flt="standard"), 400, "ces.0013")
    t = now_ms()
    e = expect_error(lambda: show(f.ces, "cpu_usage", d, frm=t, to=t), 400, "ces.0013")
    assert "from" in e.error_msg
    expect_error(lambda: show(f.ces, "cpu_usage", d, frm=t // 1000, to=t), 400, "ces.0013")
    expect_error(lambda: f.ces.show_metric_data(ShowMetricDataRequest(
        namespace=NS, metric_name="cpu_usage", dim_0=f"instance_id{d}", filter="average", period=1,
        _from=t - 1000, to=t)), 400, "ces.0013")
    # Unknown metric, namespace or desktop: 200, no datapoints.
    assert show(f.ces, "no_such_metric", d).datapoints == []
    assert show(f.ces, "cpu_usage", d, ns="SYS.ECS").datapoints == []
    assert show(f.ces, "cpu_usage", "4270ff17-aba3-4138-89fa-820594c39755").datapoints == []
    assert show(f.ces, "disk_usedPercent", d).datapoints == [], "a disk metric needs its mount_point"


def test_batch_list_metric_data(fleet):
    f = fleet
    to = now_ms() + 60_000
    frm = to - 3_600_000
    mount = root_mount(f, f.ids[0])
    metrics = [metric("cpu_usage", f.ids[0]), metric("mem_usedPercent", f.ids[1]),
               metric("disk_usedPercent", f.ids[0], mount), metric("cpu_usage", "no-such-desktop")]
    for period in ["300", 300, "60", 1]:
        r = f.ces.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
            metrics=metrics, period=period, filter="max", _from=frm, to=to)))
        assert [(m.metric_name, m.dimensions[0].value) for m in r.metrics] == \
            [("cpu_usage", f.ids[0]), ("mem_usedPercent", f.ids[1]), ("disk_usedPercent", f.ids[0]),
             ("cpu_usage", "no-such-desktop")], "in request order"
        assert [m.unit for m in r.metrics] == ["%", "%", "%", "unknown"]
        assert all(m.datapoints for m in r.metrics[:3]), (period, r)
        assert r.metrics[3].datapoints == []
        field = "average" if int(period) == 1 else "max"
        for m in r.metrics[:3]:
            for p in m.datapoints:
                assert getattr(p, field) is not None
                assert p.timestamp % (int(period) * 1000) == 0 or int(period) == 1
    # The same figures as ShowMetricData.
    one = show(f.ces, "cpu_usage", f.ids[0], period=300, flt="max", frm=frm, to=to)
    r = f.ces.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
        metrics=[metric("cpu_usage", f.ids[0])], period="300", filter="max", _from=frm, to=to)))
    assert [(p.timestamp, p.max) for p in r.metrics[0].datapoints] == \
        [(p.timestamp, p.max) for p in one.datapoints]


def test_batch_list_metric_data_moves_from_by_the_3000_point_rule(fleet):
    f = fleet
    to = now_ms() + 60_000
    # 500 metrics at period "1": (to - from) may be at most 3000 * 60000 / 500 = 6 minutes.
    metrics = [metric("cpu_usage", f.ids[0])] + [metric("cpu_usage", f"ghost-{i}") for i in range(499)]
    r = f.ces.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
        metrics=metrics, period="1", filter="average", _from=to - 3_600_000, to=to)))
    points = r.metrics[0].datapoints
    assert points, "recent points are inside the moved range"
    # (from is then rounded down to the raw data's minute.)
    assert min(p.timestamp for p in points) >= (to - 360_000) // 60_000 * 60_000


def test_batch_list_metric_data_errors(fleet):
    f = fleet
    to = now_ms()

    def call(metrics=None, period="300", flt="average", frm=None, to_=None):
        return f.ces.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
            metrics=metrics if metrics is not None else [metric("cpu_usage", f.ids[0])], period=period,
            filter=flt, _from=frm if frm is not None else to - 60_000, to=to_ if to_ is not None else to)))

    e = expect_error(lambda: call(period="10086"), 400, "ces.0014")
    assert "[period]" in e.error_msg
    e = expect_error(lambda: call(period=7), 400, "ces.0014")
    assert "[period]" in e.error_msg
    e = expect_error(lambda: call(flt="standard"), 400, "ces.0014")
    assert "[filter]" in e.error_msg
    e = expect_error(lambda: call(frm=to, to_=to), 400, "ces.0014")
    assert "[from, to]" in e.error_msg
    e = expect_error(lambda: call(frm=(to - 60_000) // 1000, to_=to // 1000), 400, "ces.0014")
    assert "[from]" in e.error_msg
    e = expect_error(lambda: call(metrics=[metric("cpu_usage", f.ids[0])] * 501), 400, "ces.0014")
    assert "[metrics]" in e.error_msg
    e = expect_error(lambda: call(metrics=[]), 400, "ces.0014")
    assert "[metrics]" in e.error_msg
    e = expect_error(lambda: call(metrics=[MetricInfo(namespace=NS, metric_name="cpu_usage", dimensions=[])]),
                     400, "ces.0014")
    assert "[metrics[0].dimensions]" in e.error_msg


def test_another_projects_desktops_are_never_visible(fleet):
    f = fleet
    d = f.ids[0]
    assert show(f.other, "cpu_usage", d).datapoints == []
    r = f.other.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
        metrics=[metric("cpu_usage", d)], period="1", filter="average", _from=now_ms() - 600_000, to=now_ms())))
    assert r.metrics[0].datapoints == []
    assert r.metrics[0].unit == "unknown"
    listed = f.other.list_metrics(ListMetricsRequest())
    assert listed.metrics == [] and listed.meta_data.total == 0
    listed = f.other.list_metrics(ListMetricsRequest(dim_0=f"instance_id,{d}"))
    assert listed.metrics == []


def test_every_operation_with_a_token(fleet):
    f = fleet
    tok = get_token(f.server).x_subject_token
    c = token_ces_client(f.server, tok)
    d = f.ids[0]
    assert show(c, "cpu_usage", d).datapoints
    r = c.batch_list_metric_data(BatchListMetricDataRequest(body=BatchListMetricDataRequestBody(
        metrics=[metric("cpu_usage", d)], period=60, filter="min", _from=now_ms() - 600_000, to=now_ms())))
    assert r.metrics[0].datapoints
    assert c.list_metrics(ListMetricsRequest(metric_name="cpu_usage")).meta_data.total == N
    # A token of the main project cannot read through another project's path.
    other = token_ces_client(f.server, tok, f.other_pid)
    expect_error(lambda: show(other, "cpu_usage", d), 403, "ces.0017")
