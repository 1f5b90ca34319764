"""Helpers for the SDK conformance suite: run a real deskfleet-server, drive its admin
commands, and build clients from the UNCHANGED official Huawei Cloud SDKs.

Nothing here mocks the server or patches the SDK. Two small adapters use the SDK's own
public extension points:

* ``ProjectTokenCredentials`` -- how a token is sent with the unchanged Workspace SDK (see
  its docstring).
* ``RecordingExceptionHandler`` -- delegates every error response to the SDK's own
  ``DefaultExceptionHandler`` (so ``status_code``, ``error_code``, ``error_msg``,
  ``request_id`` and ``encoded_auth_msg`` are exactly what the SDK parses) and only
  attaches the decoded JSON body to the raised exception as ``e.body``, because the SDK
  does not expose ``error_detail``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlparse

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exception_handler import DefaultExceptionHandler
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException, ServiceResponseException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkiam.v3 import IamClient
from huaweicloudsdkiam.v3.iam_credentials import IamCredentials
from huaweicloudsdkworkspace.v2 import WorkspaceClient

START_TIMEOUT_S = 20.0
ADMIN_TIMEOUT_S = 30.0
AUTH_PREFIX = "Incorrect IAM authentication information: "


# --------------------------------------------------------------------------- server


def server_bin() -> str:
    path = os.environ.get("DESKFLEET_SERVER_BIN", "")
    if not path:
        raise RuntimeError("DESKFLEET_SERVER_BIN is not set (use scripts/sdk-tests.sh)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(f"DESKFLEET_SERVER_BIN={path!r} is not an executable file")
    return path


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise TypeError(f"unsupported TOML value {v!r}")


def to_toml(config: dict) -> str:
    """A tiny TOML writer for the flat tables the server's config uses."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for table, values in config.items():
        if isinstance(values, dict):
            lines.append(f"\n[{table}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def _server_env() -> dict:
    # The server layers DESKFLEET_* environment variables over its config; keep the
    # caller's environment from leaking settings into the test servers.
    return {k: v for k, v in os.environ.items() if not k.startswith("DESKFLEET_")}


class Server:
    """One deskfleet-server process with its own data dir."""

    def __init__(self, data_dir: Path, config: Optional[dict] = None):
        self.bin = server_bin()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config or {}
        self.proc: Optional[subprocess.Popen] = None
        self.addr: Optional[str] = None
        self._endpoint: Optional[str] = None
        self.bootstrap: dict = {}
        self.log_path = self.data_dir / "server.log"

    # -- lifecycle

    def start(self, bootstraps: bool = True) -> "Server":
        """Starts the server and waits until it accepts connections; with ``bootstraps``
        (an empty store) also for ``bootstrap.json``. A replica joining a database another
        one bootstrapped writes none: pass ``bootstraps=False`` and set ``bootstrap``."""
        args = [self.bin, "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"]
        if self.config:
            cfg = self.data_dir / "config.toml"
            cfg.write_text(to_toml(self.config))
            args += ["--config", str(cfg)]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=_server_env())
        addr_file = self.data_dir / "listen.addr"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"deskfleet-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"deskfleet-server did not start within {START_TIMEOUT_S}s:\n{self.log_tail()}")
            addr = addr_file.read_text().strip() if addr_file.exists() else ""
            if addr and self._accepts(addr) and (not bootstraps or (self.data_dir / "bootstrap.json").exists()):
                try:
                    if bootstraps:
                        self.bootstrap = json.loads((self.data_dir / "bootstrap.json").read_text())
                except ValueError:  # being written
                    pass
                else:
                    self.addr = addr
                    # Written before listen.addr: https://... (http://... with TLS off).
                    self._endpoint = (self.data_dir / "endpoint.url").read_text().strip()
                    return self
            time.sleep(0.05)

    @staticmethod
    def _accepts(addr: str) -> bool:
        host, _, port = addr.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return True
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    @property
    def endpoint(self) -> str:
        """The base URL the server wrote to ``DATA_DIR/endpoint.url``."""
        return self._endpoint

    @property
    def ca(self) -> Optional[str]:
        """The server's private CA (``DATA_DIR/ca.pem``); None with TLS off."""
        path = self.data_dir / "ca.pem"
        return str(path) if path.exists() else None

    @property
    def verify(self):
        """What ``requests`` takes as ``verify=``: the server's CA bundle."""
        return self.ca or True

    # -- bootstrap identity

    @property
    def project_id(self) -> str:
        return self.bootstrap["project_id"]

    @property
    def ak(self) -> str:
        return self.bootstrap["access_key"]

    @property
    def sk(self) -> str:
        return self.bootstrap["secret_key"]

    # -- admin commands

    def admin(self, *args: str) -> Any:
        cmd = [self.bin, "--data-dir", str(self.data_dir)]
        if self.config.get("database_url"):
            cmd += ["--database-url", self.config["database_url"]]
        cmd += ["admin", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=ADMIN_TIMEOUT_S, env=_server_env(),
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout)

    def create_project(self, name: str) -> dict:
        return self.admin("projects", "create", "--name", name)

    def create_user(self, name: str, project_id: str, role: str, password: Optional[str] = None) -> dict:
        args = ["users", "create", "--name", name, "--project", project_id, "--role", role]
        if password is not None:
            args += ["--password", password]
        return self.admin(*args)

    def create_access_key(self, user: str, project_id: str) -> dict:
        return self.admin("access-keys", "create", "--user", user, "--project", project_id)

    def import_desktops(self, project_id: str, desktops: list) -> list:
        f = self.data_dir / f"import-{time.monotonic_ns()}.json"
        f.write_text(json.dumps(desktops))
        return self.admin("desktops", "import", "--project", project_id, str(f))

    def create_enrollment_token(self, project_id: Optional[str] = None) -> dict:
        """``admin enrollment-tokens create``: ``{"enrollment_token", "project_id", "expires_at"}``."""
        return self.admin("enrollment-tokens", "create", "--project", project_id or self.project_id)

    @property
    def signing_pub(self) -> Path:
        """The package-signing public key that guests trust."""
        return self.data_dir / "package-signing.pub"

    def decode(self, message: str) -> dict:
        # Documented without --data-dir: decoding needs no database.
        cmd = [self.bin, "admin", "decode-authorization-message", message]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=ADMIN_TIMEOUT_S, env=_server_env(),
                           stdin=subprocess.DEVNULL, cwd=self.data_dir)
        if p.returncode != 0:
            raise RuntimeError(f"admin decode-authorization-message failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout)

    # -- clients

    def workspace(self, ak: Optional[str] = None, sk: Optional[str] = None,
                  project_id: Optional[str] = None) -> WorkspaceClient:
        return workspace_client(self.endpoint, ak or self.ak, sk or self.sk, project_id or self.project_id,
                                ca=self.ca)

    def iam(self, token: Optional[str] = None) -> IamClient:
        return iam_client(self.endpoint, token, ca=self.ca)

    def token_workspace(self, token: str, project_id: Optional[str] = None) -> WorkspaceClient:
        return token_workspace_client(self.endpoint, token, project_id or self.project_id, ca=self.ca)

    def http_config(self) -> HttpConfig:
        """The SDK's HTTP settings trusting this server's CA."""
        return http_config(self.ca)


def sibling_bin(name: str) -> str:
    """Another binary of the workspace, next to DESKFLEET_SERVER_BIN (same cargo profile)."""
    path = Path(server_bin()).parent / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"{path} is not an executable file (build it: cargo build --workspace --bins)")
    return str(path)


# --------------------------------------------------------------------------- processes (/proc)


def proc_ppid(pid: int) -> Optional[int]:
    """The parent pid of a live process, from /proc/PID/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":  # a zombie is gone for our purposes
        return None
    return int(fields[1])


def proc_exe(pid: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def children_named(ppid: int, name: str) -> dict:
    """``{pid: executable path}`` of the live children of ``ppid`` whose executable is
    called ``name`` (the executable, not the 15-character ``comm``)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if proc_ppid(pid) != ppid:
            continue
        exe = proc_exe(pid)
        if exe and os.path.basename(exe.removesuffix(" (deleted)")) == name:
            found[pid] = exe
    return found


def alive(pid: int) -> bool:
    return proc_ppid(pid) is not None


class Guest:
    """One ``deskfleet-guest`` process (a desktop's daemon) with its own state directory.

    It runs in a session of its own, so that the monitor it starts (which stays in the
    guest's process group) can be found and, as a last resort, killed with it."""

    MONITOR = "deskfleet-monitor"

    def __init__(self, server: Server, enrollment_token: str, state_dir: Path, hostname: str,
                 monitor_interval_ms: int = 300, heartbeat_secs: int = 1):
        self.bin = sibling_bin("deskfleet-guest")
        self.server = server
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.hostname = hostname
        # What an operator hands a desktop: the URL and the token, in a file (never on the
        # command line). No CA: the guest pins it by the token's fingerprint.
        token_file = self.state_dir.parent / f"{self.state_dir.name}.token"
        token_file.write_text(enrollment_token + "\n")
        token_file.chmod(0o600)
        self.args = [self.bin, "--server", server.endpoint, "--enrollment-token-file", str(token_file),
                     "--trusted-key", str(server.signing_pub), "--state-dir", str(self.state_dir),
                     "--hostname", hostname, "--monitor-interval-ms", str(monitor_interval_ms),
                     "--heartbeat-secs", str(heartbeat_secs)]
        if not server.endpoint.startswith("https:"):
            self.args.append("--allow-insecure-http")
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self.seen_monitors: set = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def install_root(self) -> Path:
        return self.state_dir / "agents"

    def start(self) -> "Guest":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=_server_env(), start_new_session=True)
        return self

    def monitors(self) -> dict:
        """The running ``deskfleet-monitor`` children of this guest: ``{pid: exe}``."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        found = children_named(self.proc.pid, self.MONITOR)
        self.seen_monitors.update(found)
        return found

    def terminate(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout`` s; the exit status, or None if it did not exit."""
        if self.proc is None:
            return None
        self.monitors()  # remember the monitors before they are reparented
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL; then kill whatever is left of its process group
        (a monitor that outlived the guest) and every monitor it was seen running."""
        if self.proc is None:
            return
        if self.terminate(timeout=10.0) is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only its processes
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.seen_monitors:
            exe = proc_exe(pid)
            if exe and os.path.basename(exe.removesuffix(" (deleted)")) == self.MONITOR:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


# --------------------------------------------------------------------------- SDK clients


class RecordingExceptionHandler(DefaultExceptionHandler):
    """The SDK's own DefaultExceptionHandler, plus ``e.body`` (the decoded error body)."""

    def handle_exception(self, request, response):
        try:
            super().handle_exception(request, response)
        except ServiceResponseException as e:
            try:
                e.body = response.json()
            except ValueError:
                e.body = response.text
            e.headers = dict(response.headers)
            raise


def http_config(ca: Optional[str] = None) -> HttpConfig:
    """The SDK's HTTP settings; ``ca``: the CA bundle to verify the server with (the SDK's
    own ``ssl_ca_cert``), e.g. ``server.ca``."""
    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 30)
    cfg.retry_times = 0
    if ca:
        cfg.ssl_ca_cert = ca
    return cfg


def workspace_client(endpoint: str, ak: str, sk: str, project_id: Optional[str],
                     ca: Optional[str] = None) -> WorkspaceClient:
    return (WorkspaceClient.new_builder()
            .with_http_config(http_config(ca))
            .with_credentials(BasicCredentials(ak, sk, project_id))
            .with_endpoint(endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


def iam_client(endpoint: str, token: Optional[str] = None, ca: Optional[str] = None) -> IamClient:
    creds = IamCredentials()
    if token:
        creds = creds.with_x_auth_token(token)
    return (IamClient.new_builder()
            .with_http_config(http_config(ca))
            .with_credentials(creds)
            .with_endpoint(endpoint)
            .with_exception_handler(RecordingExceptionHandler())
            .build())


class ProjectTokenCredentials(IamCredentials):
    """How the UNCHANGED Workspace SDK sends an IAM token (X-Auth-Token).

    What the installed huaweicloudsdkcore 3.1.219 offers (read in the venv):
      * ``BasicCredentials`` always signs (SDK-HMAC-SHA256) unless an ``Authorization``
        header is already present, and with neither AK nor SK it falls back to the ECS
        metadata service -- it has no token support at all.
      * ``client.preset_headers`` could add ``X-Auth-Token``, but the request would still be
        AK/SK-signed (or carry a fake ``Authorization``), so it would not be a token-only call.
      * The IAM SDK ships ``IamCredentials`` (huaweicloudsdkiam.v3.iam_credentials): it sets
        ``X-Auth-Token`` and never signs -- exactly a token call. It only lacks the
        ``{project_id}`` path substitution that BasicCredentials does.

    Chosen: build the WorkspaceClient normally (its builder only admits BasicCredentials;
    with a project_id set the build does no I/O), then hand the client this subclass of the
    SDK's own IamCredentials through the public ``Client.with_credentials``. The only
    addition is ``get_update_path_params`` returning the token's project id, which the SDK
    uses to fill ``/v2/{project_id}/...``. The wire request is then: no Authorization, no
    X-Sdk-Date, ``X-Auth-Token: <token>``.
    """

    def __init__(self, token: str, project_id: str):
        super().__init__(token)
        self.project_id = project_id

    def get_update_path_params(self):
        return {"project_id": self.project_id}


def token_workspace_client(endpoint: str, token: str, project_id: str, ca: Optional[str] = None) -> WorkspaceClient:
    client = workspace_client(endpoint, "token-mode-unused-ak", "token-mode-unused-sk", project_id, ca)
    client.with_credentials(ProjectTokenCredentials(token, project_id))
    return client


# --------------------------------------------------------------------------- raw requests


def raw(method: str, server: Server, path: str, *, ak: Optional[str] = None, sk: Optional[str] = None,
        query: Optional[list] = None, body: Any = None, headers: Optional[dict] = None,
        sign: bool = True, project_id: Optional[str] = None) -> requests.Response:
    """A request with ``requests``, signed with the SDK's own Signer (as the SDK would)."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if project_id:
        headers.setdefault("X-Project-Id", project_id)
    base = urlparse(server.endpoint)
    req = SdkRequest(method=method, schema=base.scheme, host=base.netloc, resource_path=path,
                     query_params=list(query or []), header_params=headers, body=data)
    if sign:
        Signer(BasicCredentials(ak or server.ak, sk or server.sk)).sign(req)
    else:
        Signer.process_request_uri(req)
    return requests.request(method, f"{server.endpoint}{req.uri}", headers=req.header_params,
                            data=req.body, timeout=30, verify=server.verify)


# --------------------------------------------------------------------------- polling


def wait_for(fn: Callable[[], Any], pred: Callable[[Any], bool], timeout: float, what: str, interval=0.1):
    """Calls ``fn`` until ``pred(result)`` holds; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if pred(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last}")
        time.sleep(interval)


def ids(items: Iterable, attr: str = "desktop_id") -> set:
    return {getattr(i, attr) for i in items}


def expect_error(call: Callable[[], Any], status: int, code, msg_startswith: Optional[str] = None):
    """Runs an SDK call that must fail; checks status, error code and a non-empty request id."""
    with pytest.raises(ClientRequestException) as info:
        call()
    e = info.value
    body = getattr(e, "body", None)
    assert e.status_code == status, f"{e} body={body}"
    assert e.error_code == code, f"{e} body={body}"
    assert e.request_id, f"empty request id: {e}"
    if msg_startswith is not None:
        assert e.error_msg.startswith(msg_startswith), f"{e} body={body}"
    return e
