"""Three replicas on one PostgreSQL database behind a real load balancer (HAProxy).

The deployment of ``docs/operations.md`` ("Several replicas on PostgreSQL"): three
``deskfleet-server`` processes share one database, one ``secrets.key`` and one private CA
(each issues its own leaf from it); only the first holds the package-signing key. HAProxy,
from Debian's package, passes TLS through to them (TCP mode, round robin, health checks),
for the API and for the guests' WebSockets alike.

* The unchanged Workspace SDK works through the balancer, and simulated desktops
  (``deskfleet-fleet-sim``, the real protocol, packages verified as the guest does) spread
  over the replicas are installed, with packages served by replicas that hold no signing
  key.
* SIGKILL of a replica while installs are in flight: its desktops reconnect through the
  balancer, the others resume their work, every desktop is installed exactly once.
* SIGTERM drains a replica: idle desktops are sent elsewhere at once, installs in flight
  finish first, the replica exits cleanly, nothing is installed twice.
* Lockout counters and revocation are shared; a job created on one replica reaches a
  desktop connected to another within a second.

These tests need PostgreSQL (``TEST_DATABASE_URL``, as CI sets it); without it they skip.
The failover size is ``DESKFLEET_FAILOVER_DESKTOPS`` (default 300; ``bench/replicas``
runs 1,000 and records the figures).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse, urlunparse

import pytest
import requests
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListDesktopsRequest,
    ShowJobRequest,
)

import harness
from harness import AUTH_PREFIX, Server, expect_error, wait_for, workspace_client

DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
if not DATABASE_URL:
    pytest.skip("TEST_DATABASE_URL is not set: the replica tests need PostgreSQL (they run in CI)",
                allow_module_level=True)

REPLICAS = 3
FAILOVER_DESKTOPS = int(os.environ.get("DESKFLEET_FAILOVER_DESKTOPS", "300"))
CONFIG = {
    "jobs": {"delivery_timeout_ms": 120000, "execution_timeout_ms": 120000, "sweep_interval_ms": 200},
    # The scheduler's poll is slowed far below the tests' deadlines: work reaches another
    # replica's desktops through PostgreSQL's notification, or not in time.
    "fleet": {"schedule_interval_ms": 10000, "drain_secs": 30, "max_new_connections_per_sec": 5000},
    "throttle": {"enabled": False},
    "metrics": {"job_count_interval_ms": 0},
}
FIGURES = os.environ.get("DESKFLEET_FAILOVER_FIGURES")


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True,
                   timeout=60)


def with_database(url: str, name: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/" + name))


class Balancer:
    """HAProxy in front of the replicas: TCP mode (TLS passes through), round robin."""

    def __init__(self, directory: Path, backends: list[str]):
        self.port = free_port()
        self.config = directory / "haproxy.cfg"
        servers = "\n".join(
            f"    server r{i} {addr} check inter 300ms fall 2 rise 2" for i, addr in enumerate(backends))
        self.config.write_text(f"""global
    maxconn 8000

defaults
    mode tcp
    timeout connect 1s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch 1

frontend deskfleet
    bind 127.0.0.1:{self.port}
    default_backend replicas

backend replicas
    balance roundrobin
{servers}
""")
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(directory / "haproxy.log", "wb")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: Server._accepts(f"127.0.0.1:{self.port}"), bool, 10, "HAProxy listening")
        except AssertionError:
            self.stop()
            raise AssertionError(f"HAProxy did not start:\n{(directory / 'haproxy.log').read_text()}")

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, directory: Path):
        self.dir = directory
        self.database = f"deskfleet_replicas_{uuid.uuid4().hex[:12]}"
        psql(DATABASE_URL, f"CREATE DATABASE {self.database}")
        self.url = with_database(DATABASE_URL, self.database)
        self.replicas: list[Server] = []
        self.balancer: Optional[Balancer] = None
        try:
            self._start(directory, dict(CONFIG, database_url=self.url))
        except BaseException:
            self.stop()
            raise

    def _start(self, directory: Path, config: dict) -> None:
        first = Server(directory / "replica-0", config)
        self.replicas.append(first.start())
        for i in range(1, REPLICAS):
            d = directory / f"replica-{i}"
            d.mkdir(parents=True)
            # One key-encryption key and one CA for all; the package-signing key stays
            # with the first replica only.
            for shared in ("secrets.key", "ca.pem", "ca.key"):
                shutil.copy2(first.data_dir / shared, d / shared)
            replica = Server(d, config)
            replica.bootstrap = dict(first.bootstrap)
            self.replicas.append(replica.start(bootstraps=False))
        self.balancer = Balancer(directory, [r.addr for r in self.replicas])
        self.ca = first.ca
        self.first = first

    def workspace(self, ak: Optional[str] = None, sk: Optional[str] = None):
        return workspace_client(self.balancer.endpoint, ak or self.first.ak, sk or self.first.sk,
                                self.first.project_id, ca=self.ca)

    def connected(self, replica: Server) -> int:
        text = requests.get(replica.endpoint + "/metrics", verify=self.ca, timeout=5).text
        for line in text.splitlines():
            if line.startswith("deskfleet_fleet_connected_desktops "):
                return int(float(line.split()[1]))
        return 0

    def stop(self) -> None:
        if self.balancer:
            self.balancer.stop()
        for r in self.replicas:
            r.stop()
        try:
            psql(DATABASE_URL, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
        except subprocess.CalledProcessError:
            pass


class FleetSim:
    """``deskfleet-fleet-sim`` with its JSON lines collected."""

    def __init__(self, cluster: Cluster, server: str, desktops: int, prefix: str, watch_ms: int = 0):
        token = cluster.first.create_enrollment_token()["enrollment_token"]
        args = [harness.sibling_bin("deskfleet-fleet-sim"), "--server", server, "--ca-cert", cluster.ca,
                "--trusted-key", str(cluster.first.signing_pub), "--desktops", str(desktops),
                "--connect-rate", "500", "--hostname-prefix", prefix, "--watch-ms", str(watch_ms)]
        env = dict(os.environ, DESKFLEET_ENROLLMENT_TOKEN=token)
        self.errors = open(cluster.dir / f"{prefix}.stderr", "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.errors, env=env,
                                     stdin=subprocess.DEVNULL, text=True)
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def wait_connected(self, timeout: float) -> dict:
        return wait_for(lambda: next((e for e in self.events if e["event"] == "connected"), None),
                        lambda e: e is not None, timeout, "every simulated desktop enrolled")

    def finish(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        self.errors.close()
        done = [e for e in self.events if e["event"] == "done"]
        assert done, "fleet-sim printed no summary"
        return done[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def desktop_ids(client, prefix: str) -> list[str]:
    ids, offset = [], 0
    while True:
        page = client.list_desktops(ListDesktopsRequest(computer_name=prefix, limit=1000, offset=offset)).desktops
        ids += [d.desktop_id for d in page or []]
        if not page or len(page) < 1000:
            return ids
        offset += len(page)


def install(client, ids: list[str]) -> list[str]:
    """BatchInstallAgent in requests of 100 desktops (the API's limit); the job ids."""
    return [client.batch_install_agent(BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=ids[i:i + 100])))
            .job_id for i in range(0, len(ids), 100)]


def jobs_done(client, jobs: list[str], timeout: float) -> list:
    def states():
        return [client.show_job(ShowJobRequest(job_id=j)) for j in jobs]
    return wait_for(states, lambda js: all(j.status in ("SUCCESS", "FAIL") for j in js), timeout,
                    "every job ended", interval=0.5)


def succeeded(jobs: list) -> int:
    """Sub-jobs of ``jobs`` (ShowJob answers) that ended in SUCCESS."""
    for j in jobs:
        assert len(j.sub_jobs) == j.sub_jobs_total, "ShowJob lists every sub-job"
    return sum(1 for j in jobs for sub in j.sub_jobs if sub.status == "SUCCESS")


def sub_jobs(cluster, state: str) -> int:
    """``deskfleet_sub_jobs{state}``: counted from the database, the same on every replica."""
    text = requests.get(cluster.first.endpoint + "/metrics", verify=cluster.ca, timeout=5).text
    for line in text.splitlines():
        if line.startswith(f'deskfleet_sub_jobs{{state="{state}"}} '):
            return int(float(line.split()[1]))
    return 0


def test_the_sdk_and_guests_work_through_the_balancer(cluster):
    client = cluster.workspace()
    assert client.list_desktops(ListDesktopsRequest()).total_count == 0
    n = 60
    sim = FleetSim(cluster, cluster.balancer.endpoint, n, "lb-desk")
    try:
        sim.wait_connected(60)
        # Spread by the balancer: every replica holds some of them.
        per_replica = wait_for(lambda: [cluster.connected(r) for r in cluster.replicas],
                               lambda c: sum(c) == n, 20, "every desktop connected")
        assert all(c > 0 for c in per_replica), per_replica
        ids = desktop_ids(client, "lb-desk")
        assert len(ids) == n
        jobs = jobs_done(client, install(client, ids), 120)
        assert [j.status for j in jobs] == ["SUCCESS"], [(j.status, j.fail_reason) for j in jobs]
        assert succeeded(jobs) == n
        summary = sim.finish()
    finally:
        sim.stop()
    # Each desktop downloaded, verified and installed its package once, from whichever
    # replica it was on: two of the three hold no signing key.
    assert summary["verified"] == n and summary["installed"] == n, summary
    assert summary["verify_failed"] == 0 and summary["download_failed"] == 0, summary
    for replica in cluster.replicas[1:]:
        assert not (replica.data_dir / "package-signing.key").exists()


def failover(cluster, how: signal.Signals) -> dict:
    n = FAILOVER_DESKTOPS
    client = cluster.workspace()
    # A simulated install takes 3 s (the guest's watch window), so that many are in
    # flight when the replica goes.
    sim = FleetSim(cluster, cluster.balancer.endpoint, n, f"fo-{how.name.lower()}", watch_ms=3000)
    try:
        sim.wait_connected(120)
        per_replica = wait_for(lambda: [cluster.connected(r) for r in cluster.replicas],
                               lambda c: sum(c) == n, 30, "every desktop connected")
        victim = cluster.replicas[1]
        on_victim = cluster.connected(victim)
        assert on_victim > 0, per_replica
        ids = desktop_ids(client, f"fo-{how.name.lower()}")
        assert len(ids) == n
        started = time.monotonic()
        jobs = install(client, ids)
        # Wait until a tenth of the installs are in flight, then take the replica away.
        wait_for(lambda: sub_jobs(cluster, "RUNNING"), lambda r: r >= n // 10, 60,
                 "installs in flight")
        hit = time.monotonic()
        victim.proc.send_signal(how)
        live = [r for r in cluster.replicas if r is not victim]
        wait_for(lambda: sum(cluster.connected(r) for r in live), lambda c: c == n, 120,
                 "every desktop connected to the live replicas")
        reconnected = time.monotonic()
        ended = jobs_done(client, jobs, 300)
        finished = time.monotonic()
        statuses = [j.status for j in ended]
        assert statuses == ["SUCCESS"] * len(jobs), [(j.status, j.fail_reason) for j in ended]
        assert succeeded(ended) == n
        summary = sim.finish()
    finally:
        sim.stop()
    exit_code = victim.proc.wait(timeout=60)
    # Each desktop installed exactly once: none lost (the jobs), none twice (the installs
    # the desktops completed). A download cut off with the replica is downloaded again.
    assert summary["installed"] == n, summary
    assert summary["verified"] >= n, summary
    assert summary["verify_failed"] == 0 and summary["download_failed"] == 0, summary
    figures = {
        "how": how.name, "desktops": n, "on_the_replica": on_victim,
        "reconnect_s": round(reconnected - hit, 2), "finish_after_hit_s": round(finished - hit, 2),
        "install_total_s": round(finished - started, 2), "reconnects": summary["reconnects"],
        "offers": summary["offers"], "downloads": summary["verified"], "exit_code": exit_code,
        "resumed": resumed_count(cluster, victim),
    }
    print(json.dumps(figures))
    if FIGURES:
        with open(FIGURES, "a") as f:
            f.write(json.dumps(figures) + "\n")
    return figures


def resumed_count(cluster, victim) -> int:
    """Installs the live replicas picked up where a desktop of the victim had got to."""
    total = 0
    for r in cluster.replicas:
        if r is victim:
            continue
        text = requests.get(r.endpoint + "/metrics", verify=cluster.ca, timeout=5).text
        for line in text.splitlines():
            if line.startswith("deskfleet_fleet_work_resumed_total "):
                total += int(float(line.split()[1]))
    return total


def test_sigkill_of_a_replica_loses_no_install_and_repeats_none(cluster):
    figures = failover(cluster, signal.SIGKILL)
    assert figures["exit_code"] == -signal.SIGKILL
    assert figures["resumed"] > 0, figures


def test_sigterm_drains_a_replica_without_interrupting_an_install(cluster):
    victim_log = cluster.replicas[1].log_path
    figures = failover(cluster, signal.SIGTERM)
    assert figures["exit_code"] == 0, cluster.replicas[1].log_tail()
    # Nothing was interrupted: no download was made twice.
    assert figures["downloads"] == figures["desktops"], figures
    log = victim_log.read_text(errors="replace")
    assert "with work in flight at the end of the drain" not in log, log[-3000:]


def test_lockout_and_revocation_hold_on_every_replica(cluster):
    first = cluster.first
    key = first.create_access_key(first.bootstrap["user_name"], first.project_id)

    def direct(replica, sk=None):
        return workspace_client(replica.endpoint, key["access_key"], sk or key["secret_key"], first.project_id,
                                ca=cluster.ca)

    # Five bad signatures spread over the replicas lock the key on all of them.
    for i in range(5):
        bad = direct(cluster.replicas[i % REPLICAS], sk="not-the-secret-key")
        expect_error(lambda: bad.list_desktops(ListDesktopsRequest()), 401, "APIGW.0301",
                     AUTH_PREFIX + "verify aksk signature fail")
    locked = AUTH_PREFIX + "AK access failed to reach the limit,forbidden"
    for replica in cluster.replicas:
        good = direct(replica)
        expect_error(lambda: good.list_desktops(ListDesktopsRequest()), 401, "APIGW.0301", locked)

    # A key taken back on one replica is refused by the others within a second, though
    # they had it cached.
    other = first.create_access_key(first.bootstrap["user_name"], first.project_id)
    clients = [workspace_client(r.endpoint, other["access_key"], other["secret_key"], first.project_id,
                                ca=cluster.ca) for r in cluster.replicas]
    for c in clients:
        assert c.list_desktops(ListDesktopsRequest()).total_count == 0
    first.admin("access-keys", "delete", other["access_key"])
    taken_back = time.monotonic()
    for c in clients[1:]:
        def refused(c=c):
            try:
                c.list_desktops(ListDesktopsRequest())
                return False
            except Exception:
                return True
        wait_for(refused, bool, 1.0, "the deleted key refused", interval=0.02)
    assert time.monotonic() - taken_back < 1.0


def test_a_job_reaches_a_desktop_on_another_replica_within_a_second(cluster):
    client_on_first = workspace_client(cluster.first.endpoint, cluster.first.ak, cluster.first.sk,
                                       cluster.first.project_id, ca=cluster.ca)
    sim = FleetSim(cluster, cluster.replicas[2].endpoint, 1, "far-desk")
    try:
        sim.wait_connected(30)
        wait_for(lambda: cluster.connected(cluster.replicas[2]), lambda c: c == 1, 10, "the desktop connected")
        [desktop] = desktop_ids(client_on_first, "far-desk")
        created = time.monotonic()
        [job] = install(client_on_first, [desktop])

        def status():
            return client_on_first.show_job(ShowJobRequest(job_id=job)).sub_jobs[0].status
        wait_for(status, lambda s: s != "WAITING", 1.0, "the install claimed on the other replica",
                 interval=0.02)
        assert time.monotonic() - created < 1.0
        [done] = jobs_done(client_on_first, [job], 30)
        assert done.status == "SUCCESS"
    finally:
        sim.stop()
