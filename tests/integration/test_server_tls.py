"""`bundle-runtime serve` over TLS: real clients (Python's ssl and http.client, curl) against
certificates made in the test, mutual TLS, rotation of the certificate on disk, and clients
that do not speak TLS or stall in their handshake."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebundle.runtime.serve.config import TlsFiles
from tests.conftest import KeyFiles
from tests.support.serverkit import (
    HOST,
    Built,
    ServerProcess,
    build,
    init_store,
    install,
    read_reply,
    serve_in_process,
    serve_process,
)
from tests.support.tlskit import Authority, Pair, authority, issue
from tests.support.xgbmodels import BIN

pytestmark = pytest.mark.timeout(120)
READY = "/v2/health/ready"


@pytest.fixture(scope="module")
def store(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    built: Built = build(keys, tmp_path_factory.mktemp("bundles"), "credit", "1.0.0", rounds=5)
    root = init_store(keys, tmp_path_factory.mktemp("device") / "store")
    install(root, built.bundle)
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def ca(pki: Path) -> Authority:
    return authority(pki, "test-ca")


@pytest.fixture(scope="module")
def server_pair(ca: Authority, pki: Path) -> Pair:
    return issue(ca, pki, "device", server=True)


@pytest.fixture(scope="module")
def client_pair(ca: Authority, pki: Path) -> Pair:
    return issue(ca, pki, "client", server=False)


def client_context(ca: Authority, pair: Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.pem)
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def get(port: int, context: ssl.SSLContext, path: str = READY) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(HOST, port, timeout=10, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def errors(log: list[str]) -> list[str]:
    return [line for line in log if "error" in line or "Traceback" in line]


def served_certificate(port: int) -> str:
    """The common name of the certificate the server presents to a new connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.rfc4514_string())


@pytest.fixture
def tls_server(store: Path, server_pair: Pair) -> Iterator[tuple[int, list[str]]]:
    files = TlsFiles(server_pair.cert, server_pair.key)
    with serve_in_process(store, tls=files, read_timeout=2.0) as (running, log):
        assert running.url.startswith("https://")
        yield running.address[1], log


def test_keep_alive_requests_over_one_tls_connection(
    tls_server: tuple[int, list[str]], ca: Authority
) -> None:
    port, log = tls_server
    connection = http.client.HTTPSConnection(HOST, port, timeout=10, context=client_context(ca))
    try:
        statuses = []
        sockets = set()
        body = json.dumps({"instances": [[1, 2, 3, 4, 5, 6]] * 300}).encode()  # ~20 kB answer
        for path, payload in [(READY, None), ("/invocations", body), ("/v2/models", None)] * 3:
            headers = {} if payload is None else {"Content-Type": "application/json"}
            connection.request("GET" if payload is None else "POST", path, payload, headers)
            response = connection.getresponse()
            data = response.read()
            statuses.append(response.status)
            sockets.add(id(connection.sock))
            if path == "/invocations":
                assert len(json.loads(data)["predictions"]) == 300
        assert statuses == [200] * 9
        assert len(sockets) == 1  # one connection: keep-alive kept
        assert connection.sock is not None
        version = connection.sock.version()  # type: ignore[attr-defined]
        assert version in ("TLSv1.2", "TLSv1.3")
        assert connection.sock.selected_alpn_protocol() in (None, "http/1.1")  # type: ignore[attr-defined]
    finally:
        connection.close()
    assert errors(log) == []


def test_tls_1_2_gets_a_forward_secret_aead_suite_and_cbc_suites_are_refused(
    tls_server: tuple[int, list[str]], ca: Authority
) -> None:
    port, _ = tls_server
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((HOST, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None and tls.version() == "TLSv1.2"
        assert cipher[0].startswith("ECDHE-") and ("GCM" in cipher[0] or "CHACHA" in cipher[0])
        tls.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_reply(tls).status == 200  # type: ignore[arg-type]
    cbc = client_context(ca)  # a TLS 1.2 client that offers only a CBC suite
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection((HOST, port), timeout=10) as raw,
        cbc.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def test_plain_http_to_the_tls_port_fails_cleanly_and_serving_goes_on(
    tls_server: tuple[int, list[str]], ca: Authority
) -> None:
    port, log = tls_server
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_reply(sock)
        assert reply.status == 400 and "https://" in reply.json()["error"]
        assert sock.recv(1) == b""
    # garbage that is no HTTP either, and a client that connects and leaves
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"\x00\xff" * 100)
    socket.create_connection((HOST, port), timeout=10).close()
    # a TLS record header that is not a ClientHello
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
        while sock.recv(100):  # perhaps an alert, then the server closes it (else: a timeout)
            pass
    assert get(port, client_context(ca)) == (200, b'{"ready":true}')
    assert errors(log) == []  # nothing logged, no traceback


def test_a_stalled_handshake_holds_no_one_up_and_ends_at_the_read_timeout(
    tls_server: tuple[int, list[str]], ca: Authority
) -> None:
    port, _ = tls_server  # read_timeout 2 s
    stalled = []
    for _ in range(5):  # half a ClientHello each
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        stalled.append(sock)
    try:
        started = time.monotonic()
        assert get(port, client_context(ca))[0] == 200
        assert time.monotonic() - started < 1.0
        for sock in stalled:
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 6  # read_timeout 2 s, not the socket's 10 s
    finally:
        for sock in stalled:
            sock.close()


def test_certificate_rotation_without_restart_and_a_bad_pair_keeps_the_old(
    store: Path, ca: Authority, tmp_path: Path
) -> None:
    first = issue(ca, tmp_path, "first", server=True)
    second = issue(ca, tmp_path, "second", server=True)
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    with serve_in_process(store, tls=TlsFiles(cert, key)) as (running, log):
        port = running.address[1]
        assert served_certificate(port) == "CN=first"
        # A device agent renames new files into place.
        for source, target in ((second.key, key), (second.cert, cert)):
            shutil.copy(source, target.with_suffix(".new"))
            os.replace(target.with_suffix(".new"), target)
        deadline = time.monotonic() + 10
        while served_certificate(port) != "CN=second":
            assert time.monotonic() < deadline, log
            time.sleep(0.2)
        assert get(port, client_context(ca)) == (200, b'{"ready":true}')
        # A certificate whose key does not match: the old pair goes on serving, one line said.
        shutil.copy(first.cert, cert.with_suffix(".new"))
        os.replace(cert.with_suffix(".new"), cert)
        deadline = time.monotonic() + 10
        while not any("cannot load TLS files" in line for line in log):
            assert time.monotonic() < deadline, log
            served_certificate(port)
            time.sleep(0.2)
        for _ in range(4):
            assert served_certificate(port) == "CN=second"
            time.sleep(0.4)
        failures = [line for line in log if line.startswith("error:")]
        assert len(failures) == 1 and "still serving the previous certificate" in failures[0]
        assert "\n" not in failures[0] and "Traceback" not in failures[0]


@pytest.fixture(scope="module")
def mtls_server(
    store: Path, server_pair: Pair, ca: Authority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = ["--tls-cert", str(server_pair.cert), "--tls-key", str(server_pair.key),
            "--tls-client-ca", str(ca.pem)]
    with serve_process(store, tmp_path_factory.mktemp("log") / "serve.log", *args) as process:
        yield process


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True, text=True, timeout=30,
    )


def test_mutual_tls_refuses_clients_without_a_certificate_the_ca_signed(
    mtls_server: ServerProcess, ca: Authority, client_pair: Pair, tmp_path: Path
) -> None:
    port = mtls_server.port
    assert get(port, client_context(ca, client_pair)) == (200, b'{"ready":true}')
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(port, client_context(ca))  # no certificate
    stranger_ca = authority(tmp_path, "other-ca")
    stranger = issue(stranger_ca, tmp_path, "stranger", server=False)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(port, client_context(ca, stranger))  # signed by a CA the server does not trust
    url = f"https://127.0.0.1:{port}{READY}"
    refused = curl("--cacert", str(ca.pem), url)
    assert refused.returncode != 0 and refused.stdout == ""
    accepted = curl("--cacert", str(ca.pem), "--cert", str(client_pair.cert),
                    "--key", str(client_pair.key), url)
    assert (accepted.returncode, accepted.stdout) == (0, '{"ready":true}'), accepted.stderr
    assert mtls_server.proc.poll() is None
    assert "Traceback" not in mtls_server.stderr() and "error" not in mtls_server.stderr()


def test_curl_with_cacert_over_the_cli_and_plain_http_fails_cleanly(
    store: Path, server_pair: Pair, ca: Authority, tmp_path: Path
) -> None:
    args = ["--tls-cert", str(server_pair.cert), "--tls-key", str(server_pair.key)]
    with serve_process(store, tmp_path / "serve.log", *args) as server:
        assert "serving on https://127.0.0.1:" in server.stderr()
        url = f"127.0.0.1:{server.port}{READY}"
        ok = curl("--cacert", str(ca.pem), "https://" + url)
        assert (ok.returncode, ok.stdout) == (0, '{"ready":true}'), ok.stderr
        plain = curl("http://" + url)
        assert plain.returncode == 0 and "use an https:// URL" in plain.stdout
        unverified = curl("https://" + url)  # the system's CAs do not know this device
        assert unverified.returncode != 0
        again = curl("--cacert", str(ca.pem), "https://" + url)
        assert again.returncode == 0
        assert server.proc.poll() is None
        assert "Traceback" not in server.stderr() and "error" not in server.stderr()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "CERT", "--tls-key", "MISSING"], "cannot load TLS files"),
        (["--tls-cert", "CERT", "--tls-key", "OTHER"], "cannot load TLS files"),
    ],
)
def test_bad_tls_options_exit_with_one_line(
    store: Path, server_pair: Pair, ca: Authority, tmp_path: Path, args: list[str],
    fragment: str,
) -> None:
    other = issue(ca, tmp_path, "other", server=True)
    paths = {"CERT": server_pair.cert, "MISSING": tmp_path / "missing.key", "OTHER": other.key,
             "CA": ca.pem}
    argv = [paths[a].as_posix() if a in paths else a for a in args]
    proc = subprocess.run(
        [str(BIN / "bundle-runtime"), "serve", "--store", str(store), "--port", "0", *argv],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def readme_blocks() -> list[str]:
    """The sh blocks of the README's "Serving on a network" section."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Serving on a network\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def test_the_readmes_certificate_commands_make_a_working_mutual_tls_setup(
    store: Path, tmp_path: Path
) -> None:
    make_certificates, run_server = readme_blocks()[:2]
    made = subprocess.run(["bash", "-euo", "pipefail", "-c", make_certificates], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    serve_line = " ".join(run_server.split("curl")[0].replace("\\\n", " ").split())
    args = serve_line.split()
    assert args[:2] == ["bundle-runtime", "serve"] and "--tls-client-ca" in args
    tls_args = args[args.index("--tls-cert"):]
    with serve_process(store, tmp_path / "serve.log",
                       *[str(tmp_path / a) if a.endswith((".pem", ".key")) else a
                         for a in tls_args]) as server:
        command = next(line for line in run_server.splitlines() if line.startswith("curl"))
        command = command.replace(":8080/", f":{server.port}/")
        ok = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
        assert (ok.returncode, ok.stdout) == (0, '{"ready":true}'), ok.stderr
        without = command.replace("--cert client.pem --key client.key ", "")
        assert without != command
        refused = subprocess.run(["bash", "-c", without], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode != 0
