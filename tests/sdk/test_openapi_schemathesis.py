"""The OpenAPI document against the real server: schemathesis runs every operation of
``/openapi.json`` with schema-valid and schema-violating inputs and checks each answer
(no 5xx, a documented status, content type and body schema, and the rest of its checks).

What it runs and leaves out, each with its reason, is ``tests/sdk/schemathesis.toml``;
``docs/api.md`` ("OpenAPI document") says how to read a failure. The test's token is the
bootstrap admin's; the generated logins name random users, so no lockout can reach it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Not run: POST /v1/opamp (left out by the configuration: protobuf bodies) and the
# document itself, which schemathesis does not test.
NOT_RUN = {"POST /v1/opamp", "GET /openapi.json"}
RUN_TIMEOUT_S = 600


def admin_token(server) -> str:
    b = server.bootstrap
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "domain": {"name": b["domain_name"]}, "name": b["user_name"], "password": b["password"]}}},
        "scope": {"project": {"id": b["project_id"]}}}}
    r = requests.post(f"{server.endpoint}/v3/auth/tokens", json=body, verify=server.verify, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def totals(output: str) -> dict:
    """The figures of schemathesis' closing summary."""
    def number(pattern: str) -> int:
        m = re.search(pattern, output)
        assert m, f"no {pattern!r} in the schemathesis output:\n{output[-3000:]}"
        return int(m.group(1))
    failures = re.search(r"(\d+) failures?\b", output.split("SUMMARY")[-1])
    return {
        "operations": number(r"Tested: (\d+)"),
        "cases": number(r"(\d+) generated"),
        "failures": int(failures.group(1)) if failures else 0,
    }


def test_every_operation_conforms_to_the_document(server_factory, tmp_path):
    # Throttling off: thousands of requests from one user in a minute would otherwise be
    # answered 429 (documented, but it would test nothing else).
    server = server_factory("openapi", {"throttle": {"enabled": False}})
    document = requests.get(f"{server.endpoint}/openapi.json", verify=server.verify, timeout=30).json()
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    documented = {f"{m.upper()} {path}" for path, item in document["paths"].items()
                  for m in methods & item.keys()}
    token = admin_token(server)
    desktop = server.import_desktops(server.project_id, [
        {"computer_name": "wks-001", "ip_address": "10.0.0.11", "os_type": "Linux"}])[0]
    desktop_id = desktop["desktop_id"] if isinstance(desktop, dict) else desktop
    r = requests.post(f"{server.endpoint}/v2/{server.project_id}/desktops/agents",
                      json={"desktop_ids": [desktop_id]}, headers={"X-Auth-Token": token},
                      verify=server.verify, timeout=30)
    assert r.status_code == 200, r.text
    env = dict(os.environ,
               DESKFLEET_PROJECT_ID=server.project_id,
               DESKFLEET_DESKTOP_ID=desktop_id,
               DESKFLEET_JOB_ID=r.json()["job_id"],
               DESKFLEET_TOKEN=token,
               DESKFLEET_ENROLLMENT_TOKEN=server.create_enrollment_token()["enrollment_token"],
               NO_COLOR="1")
    st = Path(sys.executable).with_name("st")
    args = [str(st), "--config-file", str(CONFIG), "run", f"{server.endpoint}/openapi.json",
            "--report", "junit", "--report-dir", str(tmp_path / "report")]
    if server.ca:
        args += ["--tls-verify", server.ca]
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    output = p.stdout + p.stderr
    (tmp_path / "schemathesis.txt").write_text(output)
    figures = totals(output)
    # The closing note of a run: printed with -s, and kept beside the report.
    print(f"schemathesis: {json.dumps(figures)}")
    (tmp_path / "report" / "totals.json").write_text(json.dumps(figures))
    assert p.returncode == 0, f"schemathesis found failures ({tmp_path / 'schemathesis.txt'}):\n{output[-20000:]}"
    assert figures["failures"] == 0
    junit = next((tmp_path / "report").glob("junit*.xml")).read_text()
    tested = set(re.findall(r'testcase name="([A-Z]+ [^"]+)"', junit))
    assert tested == documented - NOT_RUN
    assert figures["operations"] == len(tested)
    assert figures["cases"] >= 10 * figures["operations"]
