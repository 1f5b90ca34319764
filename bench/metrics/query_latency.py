"""Query latency of the Cloud Eye metric API, measured with the unchanged huaweicloudsdkces
client (AK/SK): ShowMetricData and BatchListMetricData over one day at period 300, on
random series of the benchmark's desktops. Prints one JSON object.

Usage: query_latency.py ENDPOINT CA_FILE PROJECT AK SK DAY_END_MS [CALLS]
"""

import json
import random
import sys
import time

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
from huaweicloudsdkcore.http.http_config import HttpConfig

endpoint, ca, project, ak, sk, day_end = sys.argv[1:7]
calls = int(sys.argv[7]) if len(sys.argv) > 7 else 500
day_end = int(day_end)
day_start = day_end - 86_400_000

cfg = HttpConfig.get_default_config()
cfg.ssl_ca_cert = ca
cfg.timeout = (5, 60)
client = (CesClient.new_builder().with_http_config(cfg)
          .with_credentials(BasicCredentials(ak, sk, project)).with_endpoint(endpoint).build())

# Every series, through ListMetrics' paging.
series, start = [], ""
while True:
    page = client.list_metrics(ListMetricsRequest(namespace="AGT.ECS", start=start, limit=1000))
    series += [(m.metric_name, [(d.name, d.value) for d in m.dimensions]) for m in page.metrics]
    if not page.metrics:
        break
    start = page.meta_data.marker
random.seed(7)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def show_once():
    name, dims = random.choice(series)
    req = ShowMetricDataRequest(namespace="AGT.ECS", metric_name=name, filter=random.choice(
        ["average", "max", "min", "sum", "variance"]), period=300, _from=day_start, to=day_end)
    for i, (k, v) in enumerate(dims):
        setattr(req, f"dim_{i}", f"{k},{v}")
    t = time.perf_counter()
    r = client.show_metric_data(req)
    return (time.perf_counter() - t) * 1000, len(r.datapoints)


def batch_once(n=10):
    picked = random.sample(series, n)
    metrics = [MetricInfo(namespace="AGT.ECS", metric_name=name,
                          dimensions=[MetricsDimension(name=k, value=v) for k, v in dims]) for name, dims in picked]
    body = BatchListMetricDataRequestBody(metrics=metrics, period="300", filter="average", _from=day_start, to=day_end)
    t = time.perf_counter()
    r = client.batch_list_metric_data(BatchListMetricDataRequest(body=body))
    return (time.perf_counter() - t) * 1000, sum(len(m.datapoints) for m in r.metrics)


show_once(), batch_once()  # warm the connection
show = [show_once() for _ in range(calls)]
batch = [batch_once() for _ in range(max(1, calls // 5))]
print(json.dumps({
    "series": len(series),
    "show_calls": len(show), "show_points_mean": sum(p for _, p in show) / len(show),
    "show_p50_ms": pct([t for t, _ in show], 50), "show_p99_ms": pct([t for t, _ in show], 99),
    "batch_calls": len(batch), "batch_metrics": 10, "batch_points_mean": sum(p for _, p in batch) / len(batch),
    "batch_p50_ms": pct([t for t, _ in batch], 50), "batch_p99_ms": pct([t for t, _ in batch], 99),
}))
