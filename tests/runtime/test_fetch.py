"""The OTA downloader against real, misbehaving servers on 127.0.0.1: one test per fault, each
asserting the exception class (an outage to retry, or a channel refused) and the message."""

from __future__ import annotations

import http.server
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgebundle.runtime.errors import ChannelError, ChannelUnreachableError
from edgebundle.runtime.ota.fetch import (
    FetchLimits,
    channel_url,
    fetch,
    fetch_exact,
    fetch_optional,
    join_url,
)

Behaviour = Callable[["_Handler"], None]

QUICK = FetchLimits(read_timeout=0.5, deadline=1.0)
BODY = b"the index"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        behaviour = self.server.routes.get(self.path)
        if behaviour is None:
            self.send_error(404)
        else:
            behaviour(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    """Scripted routes on a loopback port; ``close`` waits for every handler thread."""

    daemon_threads = False  # so that server_close joins the handler threads

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Behaviour] = {}
        self.hits: list[str] = []
        self.stopping = threading.Event()  # ends slow handlers at teardown
        self.scheme = "http"
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,))
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path

    def close(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join()


@pytest.fixture(autouse=True)
def no_thread_left_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test, servers included, ends with the threads it started with: the deadline's
    watchdog is joined whether the fetch returns or raises."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)  # straight to 127.0.0.1, even on a dev box
    before = threading.active_count()
    yield
    assert threading.active_count() == before


@pytest.fixture
def server() -> Iterator[Server]:
    with_server = Server()
    yield with_server
    with_server.close()


@pytest.fixture
def other_server() -> Iterator[Server]:
    with_server = Server()
    yield with_server
    with_server.close()


def respond(status: int, body: bytes = BODY, headers: dict[str, str] | None = None) -> Behaviour:
    def behaviour(handler: _Handler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behaviour


def redirect(location: str, status: int = 302) -> Behaviour:
    return respond(status, b"", {"Location": location})


def trickle(handler: _Handler, data: bytes) -> None:
    """One byte every 0.1 s: never silent long enough for a read timeout."""
    for byte in data:
        if handler.server.stopping.wait(0.1):
            return
        try:
            handler.wfile.write(bytes([byte]))
        except OSError:  # the client gave up
            return


def raises(error: type[ChannelError], message: str, call: Callable[[], object]) -> None:
    """``call`` raises exactly ``error`` (not a subclass) with exactly ``message``."""
    with pytest.raises(ChannelError) as info:
        call()
    assert type(info.value) is error
    assert str(info.value) == message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- outages: ChannelUnreachableError --------------------------------------------------------


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/index.json"
    message = f"cannot fetch {url}: connection refused (retry later)"
    raises(ChannelUnreachableError, message, lambda: fetch(url, 100, QUICK))
    raises(ChannelUnreachableError, message, lambda: fetch_optional(url, 100, QUICK))


def test_dns_failure() -> None:
    url = "http://channel.invalid/index.json"
    with pytest.raises(ChannelUnreachableError) as info:
        fetch_optional(url, 100, QUICK)
    assert re.fullmatch(
        rf"cannot fetch {re.escape(url)}: cannot resolve channel\.invalid \([^\n]+\) "
        r"\(retry later\)",
        str(info.value),
    )


def test_404_on_a_required_document(server: Server) -> None:
    url = server.url("/index.json")
    message = f"cannot fetch {url}: HTTP 404 Not Found (retry later)"
    raises(ChannelUnreachableError, message, lambda: fetch(url, 100, QUICK))


def test_404_and_410_on_an_optional_document_mean_absent(server: Server) -> None:
    server.routes["/keys/2.json"] = respond(410, b"gone")
    assert fetch_optional(server.url("/keys/1.json"), 100, QUICK) is None
    assert fetch_optional(server.url("/keys/2.json"), 100, QUICK) is None


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (401, "Unauthorized"),
        (403, "Forbidden"),  # S3's answer for a missing object
        (408, "Request Timeout"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ],
)
def test_http_error_status(server: Server, status: int, phrase: str) -> None:
    server.routes["/keys/1.json"] = respond(status, b"an error page")
    url = server.url("/keys/1.json")
    message = f"cannot fetch {url}: HTTP {status} {phrase} (retry later)"
    raises(ChannelUnreachableError, message, lambda: fetch_optional(url, 100, QUICK))


def test_server_that_accepts_and_never_answers_times_out() -> None:
    # the kernel completes the TCP handshake for the backlog: nobody ever reads or answers
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/index.json"
        limits = FetchLimits(read_timeout=0.3, deadline=5.0)
        message = f"cannot fetch {url}: no answer within the 0.3 s read timeout (retry later)"
        raises(ChannelUnreachableError, message, lambda: fetch(url, 100, limits))


def test_deadline_ends_a_silent_wait_without_leaving_a_thread() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/index.json"
        limits = FetchLimits(read_timeout=5.0, deadline=0.3)
        before = threading.active_count()
        message = f"cannot fetch {url}: not done within the 0.3 s deadline (retry later)"
        raises(ChannelUnreachableError, message, lambda: fetch(url, 100, limits))
        assert threading.active_count() == before


def cut_at_deadline(url: str, limits: FetchLimits = QUICK) -> float:
    """Seconds until a fetch of ``url`` is given up at the deadline, as an outage."""
    started = time.monotonic()
    message = (
        f"cannot fetch {url}: not done within the {limits.deadline:g} s deadline (retry later)"
    )
    raises(ChannelUnreachableError, message, lambda: fetch(url, 1000, limits))
    return time.monotonic() - started


def test_trickled_status_line_and_headers_are_cut_at_the_deadline(server: Server) -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 80 + b"\r\nContent-Length: 2\r\n\r\nok"
    server.routes["/index.json"] = lambda handler: trickle(handler, head)  # 12 s if let run
    elapsed = cut_at_deadline(server.url("/index.json"))
    assert elapsed < QUICK.deadline + QUICK.read_timeout + 1.0


def test_trickled_body_is_cut_at_the_deadline(server: Server) -> None:
    def slow_body(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        trickle(handler, b"b" * 100)  # 10 s if let run

    server.routes["/index.json"] = slow_body
    elapsed = cut_at_deadline(server.url("/index.json"))
    assert elapsed < QUICK.deadline + QUICK.read_timeout + 1.0


def test_trickled_tls_handshake_is_cut_at_the_deadline() -> None:
    stopping = threading.Event()

    def serve(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)  # the ClientHello
            connection.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KiB handshake record follows...
            for _ in range(100):  # ...one byte every 0.1 s: 10 s if let run
                if stopping.wait(0.1):
                    return
                try:
                    connection.sendall(b"\x02")
                except OSError:
                    return

    # ssl bounds a whole handshake by the socket timeout: make that longer than the deadline
    limits = FetchLimits(read_timeout=5.0, deadline=1.0)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        try:
            url = f"https://127.0.0.1:{listener.getsockname()[1]}/index.json"
            elapsed = cut_at_deadline(url, limits)
        finally:
            stopping.set()
            thread.join()
    assert elapsed < limits.deadline + 1.0  # well before the 5 s timeout would have ended it


# --- refusals: ChannelError ------------------------------------------------------------------


def test_endless_body_is_cut_at_the_cap(server: Server) -> None:
    def endless(handler: _Handler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the body goes on until the client leaves
        for _ in range(10_000):
            try:
                handler.wfile.write(b"\0" * 65536)
            except OSError:
                return

    server.routes["/x.bundle"] = endless
    url = server.url("/x.bundle")
    message = f"refused {url}: it sent more than the 100000 bytes allowed"
    raises(ChannelError, message, lambda: fetch_exact(url, 100_000, "0" * 64, QUICK))


def test_content_length_over_the_cap(server: Server) -> None:
    server.routes["/index.json"] = respond(200, b"x" * 101)
    url = server.url("/index.json")
    message = f"refused {url}: it declares 101 bytes, over the 100-byte cap"
    raises(ChannelError, message, lambda: fetch(url, 100, QUICK))


def test_same_origin_redirects_are_followed(server: Server) -> None:
    server.routes["/old/index.json"] = redirect("/moved/index.json", 301)  # relative
    server.routes["/moved/index.json"] = redirect(server.url("/index.json"), 307)  # absolute
    server.routes["/index.json"] = respond(200)
    assert fetch(server.url("/old/index.json"), 100, QUICK) == BODY
    assert server.hits == ["/old/index.json", "/moved/index.json", "/index.json"]


def test_redirect_to_another_port_is_refused(server: Server, other_server: Server) -> None:
    server.routes["/index.json"] = redirect(other_server.url("/index.json"))
    url = server.url("/index.json")
    message = (
        f"refused {url}: a redirect to another origin ({server.origin} → {other_server.origin})"
    )
    raises(ChannelError, message, lambda: fetch(url, 100, QUICK))
    assert other_server.hits == []


def test_http_proxy_from_the_environment_is_used(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a forward proxy is asked for the absolute URL; this one answers it itself
    server.routes["http://channel.invalid/index.json"] = respond(200)
    monkeypatch.setenv("http_proxy", server.origin)
    assert fetch("http://channel.invalid/index.json", 100, QUICK) == BODY


def test_redirect_loop_is_refused(server: Server) -> None:
    server.routes["/index.json"] = redirect("/index.json")
    url = server.url("/index.json")
    raises(ChannelError, f"refused {url}: more than 5 redirects", lambda: fetch(url, 100, QUICK))
    assert len(server.hits) == 1 + QUICK.max_redirects


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with_server = Server(context)
    yield with_server
    with_server.close()


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The device trusts the test certificate, as it would its own CA bundle: through
    OpenSSL's SSL_CERT_FILE, read each time a default context is made."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


@pytest.mark.usefixtures("trusted")
def test_https_fetch_and_same_origin_redirect(tls_server: Server) -> None:
    tls_server.routes["/old.json"] = redirect("/index.json")
    tls_server.routes["/index.json"] = respond(200)
    assert fetch(tls_server.url("/old.json"), 100, QUICK) == BODY


@pytest.mark.usefixtures("trusted")
def test_https_to_http_redirect_is_refused(tls_server: Server, server: Server) -> None:
    tls_server.routes["/index.json"] = redirect(server.url("/index.json"), 301)
    server.routes["/index.json"] = respond(200)
    url = tls_server.url("/index.json")
    message = (
        f"refused {url}: a redirect from https to http ({tls_server.origin} → {server.origin})"
    )
    raises(ChannelError, message, lambda: fetch(url, 100, QUICK))
    assert server.hits == []


def test_untrusted_certificate_is_refused(tls_server: Server) -> None:
    tls_server.routes["/index.json"] = respond(200)
    url = tls_server.url("/index.json")
    with pytest.raises(ChannelError) as info:
        fetch(url, 100, QUICK)
    assert type(info.value) is ChannelError
    assert re.fullmatch(
        rf"refused {re.escape(url)}: TLS certificate not trusted \(self.signed certificate\)",
        str(info.value),
    )


# --- channel_url, join_url and file:// -------------------------------------------------------


def test_channel_url_of_a_relative_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "channel").mkdir()
    monkeypatch.chdir(tmp_path)
    url = channel_url("channel")
    assert url == (tmp_path / "channel").as_uri()
    assert join_url(url, "keys/3.json") == (tmp_path / "channel" / "keys" / "3.json").as_uri()


def test_channel_url_of_a_directory_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    directory = tmp_path / "OTA channel für Geräte"
    (directory / "keys").mkdir(parents=True)
    (directory / "bundles").mkdir()
    (directory / "keys" / "3.json").write_bytes(b"{}")
    (directory / "bundles" / "x-1.0.0.bundle").write_bytes(b"bundle")
    url = channel_url(str(directory))
    assert url == directory.as_uri() and " " not in url
    keys, bundle = join_url(url, "keys/3.json"), join_url(url, "bundles/x-1.0.0.bundle")
    assert keys == (directory / "keys" / "3.json").as_uri()
    assert fetch(keys, 10, QUICK) == b"{}"
    assert fetch(bundle, 10, QUICK) == b"bundle"
    assert channel_url(url) == url  # the file:// URL itself is accepted as well


def test_channel_url_keeps_http_urls() -> None:
    assert channel_url("https://ota.example.com/fleet/") == "https://ota.example.com/fleet/"


def test_channel_url_of_a_missing_directory(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    message = f"cannot read channel {missing}: no such directory (retry later)"
    raises(ChannelUnreachableError, message, lambda: channel_url(missing))


def test_channel_url_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_bytes(b"{}")
    path = str(tmp_path / "index.json")
    message = f"cannot read channel {path}: not a directory (retry later)"
    raises(ChannelUnreachableError, message, lambda: channel_url(path))


def test_channel_url_with_another_scheme() -> None:
    message = "unsupported channel URL ftp://x: use http://, https://, file:// or a directory"
    raises(ChannelError, message, lambda: channel_url("ftp://x"))


def test_join_url_stays_inside_the_channel() -> None:
    message = "refused '../other/index.json': it is outside the channel http://h/channel/"
    raises(ChannelError, message, lambda: join_url("http://h/channel/", "../other/index.json"))


def test_missing_file_is_absent_when_optional_and_an_outage_when_required(tmp_path: Path) -> None:
    url = join_url(tmp_path.as_uri(), "keys/1.json")
    assert fetch_optional(url, 100, QUICK) is None
    message = f"cannot fetch {url}: no such directory (retry later)"
    raises(ChannelUnreachableError, message, lambda: fetch(url, 100, QUICK))
    (tmp_path / "keys").mkdir()
    message = f"cannot fetch {url}: no such file (retry later)"
    raises(ChannelUnreachableError, message, lambda: fetch(url, 100, QUICK))


def test_file_over_the_cap(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_bytes(b"x" * 101)
    url = (tmp_path / "index.json").as_uri()
    message = f"refused {url}: it declares 101 bytes, over the 100-byte cap"
    raises(ChannelError, message, lambda: fetch(url, 100, QUICK))
