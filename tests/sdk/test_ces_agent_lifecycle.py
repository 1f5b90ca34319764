"""The agent's life on a real desktop, driven through the unchanged ``huaweicloudsdkces``:
a real ``deskfleet-guest`` process enrolls, INSTALL runs a real ``deskfleet-monitor``,
UNINSTALL (a documented extension invocation type) stops it and removes its files while
the guest stays, and INSTALL brings it back.

This follows the server <-> guest contract for uninstall (the empty packages offer under
the empty-packages hash, answered by package statuses without a monitor entry); it needs a
guest that implements it.
"""

from __future__ import annotations

import pytest

import harness
from harness import Guest, wait_for
from test_ces_invocations import ces_client, create, one

CONFIG = {
    "jobs": {"delivery_timeout_ms": 30000, "execution_timeout_ms": 30000, "sweep_interval_ms": 100},
    "fleet": {"schedule_interval_ms": 100},
}
DEADLINE_S = 60


@pytest.fixture(scope="module")
def desk(module_server_factory, tmp_path_factory):
    s = module_server_factory("ces-lifecycle", CONFIG)
    token = s.create_enrollment_token()["enrollment_token"]
    guest = Guest(s, token, tmp_path_factory.mktemp("guest") / "state", "ces-life-1").start()
    try:
        ws = s.workspace()
        from huaweicloudsdkworkspace.v2 import ListDesktopsRequest
        desktops = wait_for(lambda: ws.list_desktops(ListDesktopsRequest()).desktops, lambda d: len(d) == 1,
                            30, "the guest to enroll")
        yield s, guest, desktops[0].desktop_id
    finally:
        guest.stop()


def finished(c, inv, status, what):
    return wait_for(lambda: one(c, inv), lambda i: i.invocation_status in (status, "FAILED", "TIMEOUT"),
                    DEADLINE_S, what, interval=0.2)


def test_install_uninstall_install(desk):
    s, guest, desktop = desk
    c = ces_client(s)
    r = create(c, "INSTALL", instance_ids=[desktop])
    done = finished(c, r.invocations[0].invocation_id, "SUCCEEDED", "the install")
    assert done.invocation_status == "SUCCEEDED", (done, guest.log_tail())
    wait_for(guest.monitors, lambda m: len(m) == 1, 20, "the monitor to run")

    r = create(c, "UNINSTALL", instance_ids=[desktop])
    done = finished(c, r.invocations[0].invocation_id, "SUCCEEDED", "the uninstall")
    assert done.invocation_status == "SUCCEEDED", (done, guest.log_tail())
    assert done.result_msg == "the agent was removed"
    wait_for(guest.monitors, lambda m: not m, 20, "the monitor to stop")
    assert harness.alive(guest.pid), "the guest itself stays"
    left = [p for p in guest.install_root.rglob("*") if p.is_file()] if guest.install_root.exists() else []
    assert not left, f"the agent's files are removed: {left}"
    # Nothing to update any more.
    r = create(c, "UPDATE", instance_ids=[desktop])
    assert r.invocations[0].error_code == "invocationmgr.0005", r

    r = create(c, "INSTALL", instance_ids=[desktop])
    done = finished(c, r.invocations[0].invocation_id, "SUCCEEDED", "the install after the uninstall")
    assert done.invocation_status == "SUCCEEDED", (done, guest.log_tail())
    wait_for(guest.monitors, lambda m: len(m) == 1, 20, "the monitor to run again")
