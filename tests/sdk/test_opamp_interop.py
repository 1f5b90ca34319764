"""A third-party OpAMP client against ``/v1/opamp``: OpenTelemetry's own Python client,
``opentelemetry-opamp-client`` from PyPI (pinned in requirements.txt), unchanged.

What that package is (0.5b0, read in the venv): an HTTP-only client.

* ``OpAMPClient(endpoint=, headers=, agent_identifying_attributes=,
  agent_non_identifying_attributes=, capabilities=, transport=, timeout_millis=,
  tls_certificate=)`` builds
  messages (``build_full_state_message``, ``build_heartbeat_message``,
  ``build_agent_disconnect_message``) and ``send(bytes)`` POSTs one ``AgentToServer``
  (``Content-Type: application/x-protobuf``, never gzip) and returns the decoded
  ``ServerToAgent``; an HTTP error raises ``OpAMPException``. Its headers are fixed at
  construction; its instance uid is a fresh UUIDv7 per client, with no way to set or
  change it (so it cannot adopt ``agent_identification.new_instance_uid``). Over https,
  ``tls_certificate`` is what ``RequestsTransport`` hands ``requests`` as ``verify=``: the
  server's CA file here.
* ``OpAMPAgent`` runs a client on threads: full state first, then heartbeats every
  ``interval`` s, answering ``ReportFullState``. Its callbacks only see ``remote_config``
  and ``error_response``: it ignores ``connection_settings`` and ``packages_available``.
* Default capabilities: ReportsStatus, ReportsHeartbeat, Accepts/ReportsRemoteConfig,
  ReportsEffectiveConfig. It has no API to report health, component health or package
  statuses (no builder for them), so those cannot be exercised with it.

The one adapter, ``RecordingTransport``, is the package's own ``RequestsTransport`` plugged
in through the client's public ``transport=`` parameter. It records every exchange and,
only where a test says the client accepts connection settings (and the client declares
``AcceptsOpAMPConnectionSettings``), applies the headers offered in
``connection_settings.opamp.headers`` to later requests, as the OpAMP specification asks
of such a client. That is how the desktop credential gets used: the package has no
setter for its headers.

What the server records of the client is read through the unchanged Workspace SDK.
The last test is separate: a raw, gzip-compressed POST (the package never compresses).
"""

from __future__ import annotations

import gzip
import hashlib
import platform
import subprocess
import threading
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlparse

import pytest
import requests
from huaweicloudsdkworkspace.v2 import (
    BatchInstallAgentReq,
    BatchInstallAgentRequest,
    ListAgentsInstallConditionRequest,
    ListDesktopsRequest,
    ShowDesktopDetailRequest,
    ShowJobRequest,
)
from opentelemetry._opamp import messages
from opentelemetry._opamp.agent import OpAMPAgent
from opentelemetry._opamp.callbacks import OpAMPCallbacks
from opentelemetry._opamp.client import _DEFAULT_CAPABILITIES, OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2 as pb
from opentelemetry._opamp.transport.exceptions import OpAMPException
from opentelemetry._opamp.transport.requests import RequestsTransport

import harness
from harness import wait_for

DELIVERY_TIMEOUT_MS = 2500
EXECUTION_TIMEOUT_MS = 3000
CONFIG = {
    "jobs": {"delivery_timeout_ms": DELIVERY_TIMEOUT_MS, "execution_timeout_ms": EXECUTION_TIMEOUT_MS,
             "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100},
}
MONITOR = "deskfleet-monitor"
CLIENT_HOST = "otel-py-client"
CLIENT_IP = "192.0.2.201"  # a documentation address: only a reported fact, never contacted

Caps = pb.AgentCapabilities
ACCEPTS_SETTINGS = Caps.AgentCapabilities_AcceptsOpAMPConnectionSettings
ACCEPTS_PACKAGES = Caps.AgentCapabilities_AcceptsPackages | Caps.AgentCapabilities_ReportsPackageStatuses
REPORT_FULL_STATE = pb.ServerToAgentFlags_ReportFullState


@dataclass
class Exchange:
    sent: pb.AgentToServer
    headers: dict
    reply: Optional[pb.ServerToAgent] = None
    error: Optional[Exception] = None


class RecordingTransport(RequestsTransport):
    """The package's RequestsTransport; records exchanges; optionally adopts offered headers."""

    def __init__(self, adopt_connection_settings: bool = False):
        super().__init__()
        self.adopt = adopt_connection_settings
        self.offered: dict = {}
        self.exchanges: list = []
        self._lock = threading.Lock()

    def send(self, *, url, headers, data, **kwargs):
        with self._lock:
            offered = dict(self.offered)
        lowered = {k.lower() for k in offered}
        headers = {**{k: v for k, v in headers.items() if k.lower() not in lowered}, **offered}
        sent = pb.AgentToServer()
        sent.ParseFromString(data)
        ex = Exchange(sent=sent, headers=headers)
        try:
            ex.reply = super().send(url=url, headers=headers, data=data, **kwargs)
        except Exception as e:
            ex.error = e
            raise
        finally:
            with self._lock:
                self.exchanges.append(ex)
        if self.adopt and ex.reply.HasField("connection_settings") and ex.reply.connection_settings.HasField("opamp"):
            with self._lock:
                self.offered = {h.key: h.value for h in ex.reply.connection_settings.opamp.headers.headers}
        return ex.reply

    def replies(self) -> list:
        with self._lock:
            return [e.reply for e in self.exchanges if e.reply is not None]


def description(host: str, ip: Optional[str] = CLIENT_IP) -> dict:
    # the server picks the package platform from os.type and host.arch (Rust's words;
    # Python's platform.machine() says the same on Linux: x86_64, aarch64)
    attrs = {"host.name": host, "os.type": "linux", "host.arch": platform.machine()}
    if ip:
        attrs["host.ip"] = ip
    return attrs


def new_client(srv, bearer: Optional[str], host: str = CLIENT_HOST, capabilities: int = _DEFAULT_CAPABILITIES,
               adopt: bool = False, ip: Optional[str] = CLIENT_IP) -> tuple:
    """``(client, its RecordingTransport)``."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    transport = RecordingTransport(adopt_connection_settings=adopt)
    client = OpAMPClient(
        endpoint=f"{srv.endpoint}/v1/opamp",
        headers=headers,
        timeout_millis=5000,
        agent_identifying_attributes={"service.name": "otel-python-opamp-interop", "service.instance.id": host},
        agent_non_identifying_attributes=description(host, ip),
        capabilities=capabilities,
        transport=transport,
        tls_certificate=srv.verify,  # the server's private CA, as RequestsTransport's verify=
    )
    return client, transport


def sent_uid(payload: bytes) -> bytes:
    m = pb.AgentToServer()
    m.ParseFromString(payload)
    return m.instance_uid


def bearer_offered(reply: pb.ServerToAgent) -> Optional[str]:
    """The ``Authorization: Bearer X`` of ``connection_settings.opamp.headers``, if any."""
    if not (reply.HasField("connection_settings") and reply.connection_settings.HasField("opamp")):
        return None
    auth = [h.value for h in reply.connection_settings.opamp.headers.headers if h.key.lower() == "authorization"]
    assert len(auth) == 1, reply.connection_settings
    assert auth[0].startswith("Bearer "), auth[0]
    return auth[0][len("Bearer "):]


def assert_no_error(reply: pb.ServerToAgent) -> None:
    assert not reply.HasField("error_response"), reply.error_response


def desktops_named(srv, name: str) -> list:
    r = srv.client.list_desktops(ListDesktopsRequest(computer_name=name))
    return [d for d in r.desktops if d.computer_name == name]  # the filter is a substring match


def monitor_version() -> str:
    out = subprocess.run([harness.sibling_bin(MONITOR), "--version"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.split()
    return out[-1]


@pytest.fixture(scope="module")
def srv(module_server_factory):
    s = module_server_factory("opamp-interop", CONFIG)
    s.client = s.workspace()
    # The bearer is the token's secret, DFE1<secret>; the CA fingerprint after the '.' is
    # for clients that pin the server's CA (this one is given the CA file instead).
    s.token = s.create_enrollment_token()["enrollment_token"].split(".")[0]
    return s


@pytest.fixture(scope="module")
def enrolled(srv):
    """``otel-py-client`` enrolled through the client's first report; it accepts connection
    settings, so it polls with its desktop credential from then on."""
    client, transport = new_client(srv, srv.token, capabilities=_DEFAULT_CAPABILITIES | ACCEPTS_SETTINGS, adopt=True)
    payload = client.build_full_state_message()
    reply = client.send(payload)
    return {"client": client, "transport": transport, "uid": sent_uid(payload), "reply": reply,
            "credential": bearer_offered(reply)}


# ------------------------------------------------------------------------------ enrollment


def test_first_report_enrolls_and_offers_a_desktop_credential(srv, enrolled):
    reply = enrolled["reply"]
    assert_no_error(reply)
    assert reply.instance_uid == enrolled["uid"]
    assert not reply.flags & REPORT_FULL_STATE, "the full state was just sent"
    assert not reply.HasField("agent_identification"), "a new agent keeps its own uid"
    # the server's capabilities, announced in its first answer
    S = pb.ServerCapabilities
    for cap in (S.ServerCapabilities_AcceptsStatus, S.ServerCapabilities_OffersConnectionSettings,
                S.ServerCapabilities_OffersPackages, S.ServerCapabilities_AcceptsPackagesStatus):
        assert reply.capabilities & cap, f"{S.Name(cap)} missing from {reply.capabilities:#x}"
    credential = enrolled["credential"]
    assert credential is not None, f"no connection_settings.opamp.headers credential in {reply}"
    assert credential.startswith("DFD1") and credential != srv.token, "a desktop credential (DFD1...)"


def test_the_desktop_is_listed_with_the_reported_facts(srv, enrolled):
    c = srv.client
    found = desktops_named(srv, CLIENT_HOST)
    assert len(found) == 1, found
    d = found[0]
    assert d.status == "ACTIVE" and d.ip_address == CLIENT_IP, d
    detail = c.show_desktop_detail(ShowDesktopDetailRequest(desktop_id=d.desktop_id)).desktop
    assert detail.computer_name == CLIENT_HOST
    assert (detail.metadata or {}).get("os_type") == "Linux", detail.metadata
    assert CLIENT_IP in (detail.ip_addresses or []), detail
    a = c.list_agents_install_condition(ListAgentsInstallConditionRequest(desktop_id=d.desktop_id)).agents_condition
    assert len(a) == 1 and a[0].agent_info[0].is_installed is False and a[0].task_status == "", a


def test_polls_with_the_credential_keep_working(srv, enrolled):
    client, transport, credential = enrolled["client"], enrolled["transport"], enrolled["credential"]
    (desktop,) = desktops_named(srv, CLIENT_HOST)
    for _ in range(3):
        reply = client.send(client.build_heartbeat_message())
        assert_no_error(reply)
        assert reply.instance_uid == enrolled["uid"]
        assert not reply.flags & REPORT_FULL_STATE, "the server lost the session"
        assert bearer_offered(reply) is None, "re-enrolled on a heartbeat"
        assert transport.exchanges[-1].headers["Authorization"] == f"Bearer {credential}"
    # still the one desktop of that name: no duplicate from the polls
    assert [d.desktop_id for d in desktops_named(srv, CLIENT_HOST)] == [desktop.desktop_id]


def test_a_restarted_client_comes_back_with_its_credential_alone(srv, enrolled):
    """A new client process: new session, new uid (the package always draws one), no
    enrollment token; same host and address, so the server takes it for the same desktop."""
    before = {d.desktop_id for d in desktops_named(srv, CLIENT_HOST)}
    client, _ = new_client(srv, enrolled["credential"])
    reply = client.send(client.build_full_state_message())
    assert_no_error(reply)
    assert bearer_offered(reply) is None, "an enrolled desktop is not enrolled again"
    assert not reply.HasField("agent_identification"), "the same host is not a clone"
    reply = client.send(client.build_heartbeat_message())
    assert_no_error(reply)
    assert not reply.flags & REPORT_FULL_STATE
    assert {d.desktop_id for d in desktops_named(srv, CLIENT_HOST)} == before


def test_a_clone_under_another_host_name_gets_its_own_identity(srv, enrolled):
    """Documented in "Cloned desktops": the same credential from another host name is a new
    desktop, answered with a new instance uid and a fresh credential. (This client cannot
    adopt the new uid: the package has no way to set it.)"""
    clone, _ = new_client(srv, enrolled["credential"], host="otel-py-clone", ip="192.0.2.202",
                       capabilities=_DEFAULT_CAPABILITIES | ACCEPTS_SETTINGS, adopt=True)
    payload = clone.build_full_state_message()
    reply = clone.send(payload)
    assert_no_error(reply)
    assert reply.HasField("agent_identification"), reply
    new_uid = reply.agent_identification.new_instance_uid
    assert len(new_uid) == 16 and new_uid != sent_uid(payload) and new_uid != enrolled["uid"]
    fresh = bearer_offered(reply)
    assert fresh and fresh.startswith("DFD1") and fresh != enrolled["credential"], reply.connection_settings
    clones = desktops_named(srv, "otel-py-clone")
    assert len(clones) == 1 and clones[0].ip_address == "192.0.2.202", clones
    originals = desktops_named(srv, CLIENT_HOST)
    assert len(originals) == 1 and originals[0].desktop_id != clones[0].desktop_id
    # the original still works with its own credential
    reply = enrolled["client"].send(enrolled["client"].build_heartbeat_message())
    assert_no_error(reply)


@pytest.mark.parametrize("bearer", [None, "DFD1" + "x" * 48, "DFE1-not-a-token", "not-a-secret"])
def test_unknown_or_missing_credentials_are_refused_with_401(srv, bearer):
    client, _ = new_client(srv, bearer, host="otel-py-refused")
    with pytest.raises(OpAMPException) as info:
        client.send(client.build_full_state_message())
    assert "401" in str(info.value), info.value
    assert desktops_named(srv, "otel-py-refused") == []


# ------------------------------------------------------------------------------ the stock agent


class Recorder(OpAMPCallbacks):
    def __init__(self):
        self.connected = 0
        self.failures: list = []
        self.errors: list = []

    def on_connect(self, agent, client):
        self.connected += 1

    def on_connect_failed(self, agent, client, error):
        self.failures.append(error)

    def on_error(self, agent, client, error_response):
        self.errors.append(error_response)


def test_stock_agent_enrolls_once_and_gets_no_install(srv):
    """``OpAMPAgent`` as shipped: default capabilities (no AcceptsPackages, no
    AcceptsOpAMPConnectionSettings), so it keeps presenting the enrollment token and ignores
    the credential offers. It must still be one desktop; and an install for it is never
    offered (OpAMP: packages only to an agent that accepts them), so it ends at the delivery
    timeout (WKS.00990001) although the agent polls all along."""
    host = "otel-stock-agent"
    client, transport = new_client(srv, srv.token, host=host)
    recorder = Recorder()
    agent = OpAMPAgent(interval=0.2, callbacks=recorder, client=client, max_retries=1, heartbeat_max_retries=0)
    agent.start()
    try:
        found = wait_for(lambda: desktops_named(srv, host), lambda d: len(d) >= 1, timeout=10,
                         what=f"{host} to be listed", interval=0.1)
        desktop_id = found[0].desktop_id
        job_id = srv.client.batch_install_agent(
            BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=[desktop_id]))).job_id
        job = wait_for(lambda: srv.client.show_job(ShowJobRequest(job_id=job_id)),
                       lambda j: j.status in ("SUCCESS", "FAIL"), timeout=DELIVERY_TIMEOUT_MS / 1000 + 10,
                       what=f"job {job_id} to end", interval=0.2)
        polls_during_job = len(transport.exchanges)
    finally:
        agent.stop(timeout=5)

    assert recorder.failures == [], recorder.failures
    assert recorder.errors == [], recorder.errors
    assert recorder.connected >= 10 and polls_during_job >= 10, (recorder.connected, polls_during_job)
    assert all(e.error is None for e in transport.exchanges)
    assert all(e.headers["Authorization"] == f"Bearer {srv.token}" for e in transport.exchanges)
    assert not any(r.HasField("packages_available") for r in transport.replies()), \
        "a package was offered to an agent without AcceptsPackages"

    assert [d.desktop_id for d in desktops_named(srv, host)] == [desktop_id], \
        "the same agent (same instance uid, same host) was enrolled as several desktops"
    assert job.status == "FAIL", job
    assert job.job_error_code == "WKS.00990001", job
    assert [(s.status, s.error_code) for s in job.sub_jobs] == [("FAILED", "WKS.00990001")], job.sub_jobs


# ------------------------------------------------------------------------------ packages


def test_a_client_accepting_packages_gets_a_standard_offer(srv):
    """With AcceptsPackages declared, the install is offered as a plain OpAMP
    PackagesAvailable the client can act on: the package downloads with the desktop
    credential and matches content_hash. The client has no package support, so it never
    reports progress: the sub-job, delivered (process 10), fails at the execution timeout."""
    host = "otel-pkg-client"
    client, _ = new_client(srv, srv.token, host=host, adopt=True,
                        capabilities=_DEFAULT_CAPABILITIES | ACCEPTS_SETTINGS | ACCEPTS_PACKAGES)
    credential = bearer_offered(client.send(client.build_full_state_message()))
    assert credential
    (d,) = desktops_named(srv, host)
    job_id = srv.client.batch_install_agent(
        BatchInstallAgentRequest(body=BatchInstallAgentReq(desktop_ids=[d.desktop_id]))).job_id

    def poll():
        reply = client.send(client.build_heartbeat_message())
        assert_no_error(reply)
        return reply

    reply = wait_for(poll, lambda r: r.HasField("packages_available"), timeout=10,
                     what="packages_available in an answer", interval=0.1)
    offer = reply.packages_available
    assert list(offer.packages) == [MONITOR], offer
    p = offer.packages[MONITOR]
    assert p.type == pb.PackageType_TopLevel
    assert p.version == monitor_version()
    assert len(p.file.content_hash) == 32 and len(p.file.signature) == 64, p.file
    url = urlparse(p.file.download_url)
    assert url.scheme == urlparse(srv.endpoint).scheme == "https", p.file
    assert url.netloc == srv.addr and url.path.startswith("/v1/packages/"), p.file
    blob = requests.get(p.file.download_url, headers={"Authorization": f"Bearer {credential}"}, timeout=30,
                        verify=srv.verify)
    assert blob.status_code == 200, blob.text
    assert hashlib.sha256(blob.content).digest() == p.file.content_hash

    # the desktop is 'delivered' (10) until it reports; a heartbeat is no progress
    poll()
    a = srv.client.list_agents_install_condition(
        ListAgentsInstallConditionRequest(desktop_id=d.desktop_id)).agents_condition[0]
    assert (a.task_status, a.process) == ("delivered", 10), a
    job = srv.client.show_job(ShowJobRequest(job_id=job_id))
    assert job.status == "RUNNING" and [(s.status, s.process) for s in job.sub_jobs] == [("RUNNING", 10)], job

    # silent from now on: the sub-job fails at the execution timeout
    job = wait_for(lambda: srv.client.show_job(ShowJobRequest(job_id=job_id)),
                   lambda j: j.status in ("SUCCESS", "FAIL"), timeout=EXECUTION_TIMEOUT_MS / 1000 + 10,
                   what=f"job {job_id} to end", interval=0.2)
    assert job.status == "FAIL" and job.job_error_code == "WKS.00990002", job
    assert [(s.status, s.error_code) for s in job.sub_jobs] == [("FAILED", "WKS.00990002")], job.sub_jobs


# ------------------------------------------------------------------------------ separate: raw HTTP


def test_raw_gzip_post_of_the_clients_message(srv):
    """Separate from the client tests (the package never compresses): the documented gzip
    request body, with the message the package builds and its decoder for the answer."""
    host = "otel-gzip-raw"
    # It declares AcceptsOpAMPConnectionSettings: only such agents are offered a credential.
    client, _ = new_client(srv, srv.token, host=host, capabilities=_DEFAULT_CAPABILITIES | ACCEPTS_SETTINGS)
    body = gzip.compress(client.build_full_state_message())
    r = requests.post(f"{srv.endpoint}/v1/opamp", data=body, timeout=30, verify=srv.verify, headers={
        "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", "Authorization": f"Bearer {srv.token}"})
    assert r.status_code == 200, r.text
    assert r.headers.get("Content-Type") == "application/x-protobuf"
    reply = messages.decode_message(r.content)
    assert_no_error(reply)
    assert (bearer_offered(reply) or "").startswith("DFD1"), reply
    assert len(desktops_named(srv, host)) == 1
