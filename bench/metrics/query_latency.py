"""Query latency of the Cloud Eye metric API: ShowMetricData and BatchListMetricData over
one day at period 300, on random series of the benchmark's desktops, measured two ways:
with the unchanged huaweicloudsdkces client (AK/SK; the SDK's signing and its decoding of
the answer into model objects included), and as HTTP round trips of the same requests
(signed by the SDK's own Signer, sent on one kept-alive HTTPS connection, the JSON body
read but not decoded): the time the server and the network take. Prints one JSON object.

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
from urllib.parse import urlparse

import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

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


session = requests.Session()
base = urlparse(endpoint)
signer = Signer(BasicCredentials(ak, sk))


def http_ms(method, path, query=(), body=None):
    headers = {"X-Project-Id": project}
    if body is not None:
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    req = SdkRequest(method=method, schema=base.scheme, host=base.netloc, resource_path=path,
                     query_params=list(query), header_params=headers, body=body)
    signer.sign(req)
    t = time.perf_counter()
    # `verify` per request: a session's own is overridden by REQUESTS_CA_BUNDLE.
    r = session.request(method, f"{endpoint}{req.uri}", headers=req.header_params, data=req.body,
                        timeout=60, verify=ca)
    r.content  # the whole body is read
    elapsed = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
    return elapsed


def show_http():
    name, dims = random.choice(series)
    query = [("namespace", "AGT.ECS"), ("metric_name", name), ("filter", "average"),
             ("period", "300"), ("from", str(day_start)), ("to", str(day_end))]
    query += [(f"dim.{i}", f"{k},{v}") for i, (k, v) in enumerate(dims)]
    return http_ms("GET", f"/V1.0/{project}/metric-data", query)


def batch_http(n=10):
    metrics = [{"namespace": "AGT.ECS", "metric_name": name,
                "dimensions": [{"name": k, "value": v} for k, v in dims]}
               for name, dims in random.sample(series, n)]
    body = {"metrics": metrics, "period": "300", "filter": "average", "from": day_start, "to": day_end}
    return http_ms("POST", f"/V1.0/{project}/batch-query-metric-data", body=body)


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
show_http(), batch_http()  # warm the connection
show_raw = [show_http() for _ in range(calls)]
batch_raw = [batch_http() for _ in range(max(1, calls // 5))]
print(json.dumps({
    "series": len(series),
    "show_calls": len(show), "show_points_mean": sum(p for _, p in show) / len(show),
    "show_p50_ms": pct([t for t, _ in show], 50), "show_p99_ms": pct([t for t, _ in show], 99),
    "batch_calls": len(batch), "batch_metrics": 10, "batch_points_mean": sum(p for _, p in batch) / len(batch),
    "batch_p50_ms": pct([t for t, _ in batch], 50), "batch_p99_ms": pct([t for t, _ in batch], 99),
    "show_http_p50_ms": pct(show_raw, 50), "show_http_p99_ms": pct(show_raw, 99),
    "batch_http_p50_ms": pct(batch_raw, 50), "batch_http_p99_ms": pct(batch_raw, 99),
}))
