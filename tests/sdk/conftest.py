"""Fixtures: real deskfleet-server processes (one temp data dir each, killed at teardown)."""

from __future__ import annotations

import contextlib
import os

import pytest

import harness

# Loopback only: never let a proxy from the environment see the test traffic.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def server_bin():
    try:
        return harness.server_bin()
    except RuntimeError as e:
        pytest.exit(str(e), returncode=2)


@contextlib.contextmanager
def _running(tmp_path_factory, name, config):
    server = harness.Server(tmp_path_factory.mktemp(name), config)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_server_factory(server_bin, tmp_path_factory):
    """Start servers that live until the end of the module: ``factory(name, config)``."""
    with contextlib.ExitStack() as stack:
        yield lambda name="srv", config=None: stack.enter_context(_running(tmp_path_factory, name, config))


@pytest.fixture
def server_factory(server_bin, tmp_path_factory):
    """Start servers that live until the end of the test: ``factory(name, config)``."""
    with contextlib.ExitStack() as stack:
        yield lambda name="srv", config=None: stack.enter_context(_running(tmp_path_factory, name, config))
