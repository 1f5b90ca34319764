"""The unchanged SDK over https: it verifies the server with the CA it is given
(``HttpConfig.ssl_ca_cert`` = ``DATA_DIR/ca.pem``) and refuses the server without it, and
the enrollment token carries that CA's fingerprint."""

from __future__ import annotations

import hashlib
import ssl
from urllib.parse import urlparse

import pytest
import requests
from huaweicloudsdkworkspace.v2 import ListDesktopsRequest

import harness


@pytest.fixture(scope="module")
def srv(module_server_factory):
    return module_server_factory("tls")


def test_the_server_speaks_https_and_the_sdk_trusts_it_through_its_ca(srv):
    assert urlparse(srv.endpoint).scheme == "https", srv.endpoint
    assert srv.workspace().list_desktops(ListDesktopsRequest()).total_count == 0


def test_without_the_ca_the_sdk_and_requests_refuse_the_server(srv):
    stranger = harness.workspace_client(srv.endpoint, srv.ak, srv.sk, srv.project_id, ca=None)
    with pytest.raises(Exception) as info:
        stranger.list_desktops(ListDesktopsRequest())
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), info.value
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{srv.endpoint}/", timeout=10)


def test_the_enrollment_token_carries_the_fingerprint_of_the_ca(srv):
    token = srv.create_enrollment_token()["enrollment_token"]
    secret, _, fingerprint = token.partition(".")
    assert secret.startswith("DFE1") and len(secret) > 4, token
    der = ssl.PEM_cert_to_DER_cert(open(srv.ca).read())
    assert fingerprint == hashlib.sha256(der).hexdigest(), token
