"""The update path against a hostile channel server: redirects elsewhere, endless and slow
responses, and validly listed bundles whose container is a weapon. Each test asserts the
refusal and that the store did not change (python-tuf's ngclient tests are the model; the key
chain's attacks are in ``test_ota_keychain.py``, the index's in ``test_ota.py``)."""

from __future__ import annotations

import http.server
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edgebundle.builder.publish import publish
from edgebundle.runtime.errors import ChannelError, ChannelUnreachableError
from edgebundle.runtime.ota.channel import bundle_file
from edgebundle.runtime.ota.fetch import FetchLimits
from edgebundle.runtime.ota.updater import update_once
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.runtime.test_bundle_format import append, info
from tests.support.channelkit import Channel, entry_for, served, write_index
from tests.support.store_helpers import Spec, build_bundles, snapshot, with_wrong_selftest
from tests.support.xgbmodels import run, train

V100, V110 = Spec("credit", "1.0.0"), Spec("credit", "1.1.0")
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def built(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[Spec, bytes]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=6).path
    paths = build_bundles(model, [V100, V110], {"keys": keys}, tmp_path_factory.mktemp("b"))
    return {spec: path.read_bytes() for spec, path in paths.items()}


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Channel]:
    with served(tmp_path / "channel") as c:
        yield c


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles, built: dict[Spec, bytes]) -> Store:
    store = Store.init(tmp_path / "store", [keys.public])
    store.install(built[V100], origin="factory")
    return store


@pytest.fixture
def published(channel: Channel, keys: KeyFiles, built: dict[Spec, bytes], tmp_path: Path) -> str:
    """1.1.0 published the honest way; the URL path of its bundle."""
    path = tmp_path / "v110.bundle"
    path.write_bytes(built[V110])
    publish(path, channel.directory, [load_private_key(keys.private, None)], timedelta(1), NOW)
    return "/" + bundle_file("credit", Version.parse("1.1.0"))


def unchanged(store: Store) -> Any:
    return snapshot(store.root), (store.root / "trust.json").read_bytes()


def refused(store: Store, url: str, error: type[Exception], match: str, **kwargs: Any) -> None:
    before = unchanged(store)
    with pytest.raises(error, match=match):
        update_once(store, url, **kwargs)
    assert unchanged(store) == before
    assert str(store.state().models["credit"].active) == "1.0.0"


def redirect_to(target: str) -> Any:
    def behaviour(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", target)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return behaviour


def test_redirect_of_the_index_to_another_host(
    store: Store, channel: Channel, published: str, tmp_path: Path
) -> None:
    with served(tmp_path / "elsewhere") as other:
        channel.behaviours["/index.json"] = redirect_to(other.url + "index.json")
        refused(store, channel.url, ChannelError, "redirect to another origin")


def test_redirect_of_a_bundle_to_another_host(
    store: Store, channel: Channel, published: str, tmp_path: Path
) -> None:
    with served(tmp_path / "elsewhere") as other:
        channel.behaviours[published] = redirect_to(other.url + published.lstrip("/"))
        before = unchanged(store)
        report = update_once(store, channel.url)
    assert report.failed and "redirect to another origin" in report.outcomes[0].detail
    assert unchanged(store)[0].state == before[0].state


def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.end_headers()  # no Content-Length: the body never ends
    try:
        while True:
            handler.wfile.write(b"{" * 65536)
    except OSError:
        pass


def test_endless_data_for_the_index_stops_at_the_cap_in_bounded_memory(
    store: Store, channel: Channel, published: str
) -> None:
    channel.behaviours["/index.json"] = endless
    limits = FetchLimits(max_index_bytes=1024 * 1024)
    message = "sent more than the 1048576 bytes"
    refused(store, channel.url, ChannelError, message, limits=limits)
    tracemalloc.start()  # a second pass, its imports done: what one pass holds at most
    try:
        with pytest.raises(ChannelError, match=message):
            update_once(store, channel.url, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the cap, one read chunk and small change (the server thread shares this process)
    assert peak < 1.5 * limits.max_index_bytes, peak


def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A byte every 50 ms: never silent long enough for a read timeout."""
    try:
        handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
        for _ in range(400):
            handler.wfile.write(b"X-Slow: 1\r\n"[:1])
            handler.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


def test_slow_retrieval_ends_at_the_deadline(
    store: Store, channel: Channel, published: str
) -> None:
    channel.behaviours["/index.json"] = trickle
    limits = FetchLimits(read_timeout=5.0, deadline=1.0)
    started = time.monotonic()
    refused(store, channel.url, ChannelUnreachableError, "1 s deadline", limits=limits)
    # a bound on the hang, not a speed target: without the deadline this takes 20 s
    assert time.monotonic() - started < limits.deadline + limits.read_timeout


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (info("../escaped", b"evil"), "escapes the bundle directory"),
        (info("/etc/cron.d/evil", b"evil"), "is an absolute path"),
        (info("link", kind=tarfile.SYMTYPE, linkname="/etc/shadow"), "is a symbolic link"),
        (info("hard", kind=tarfile.LNKTYPE, linkname="/etc/passwd"), "is a hard link"),
        (info("model.onnx", b"evil"), "duplicate member 'model.onnx'"),
    ],
    ids=["path-traversal", "absolute", "symlink", "hard-link", "duplicate"],
)
def test_listed_bundle_with_a_hostile_member(
    store: Store,
    channel: Channel,
    keys: KeyFiles,
    built: dict[Spec, bytes],
    member: tuple[tarfile.TarInfo, bytes],
    fragment: str,
    tmp_path: Path,
) -> None:
    """The index lists the hostile bytes by their true sha256: only the container's own
    verification stands between them and the store, and it runs before anything is written."""
    hostile = append(built[V110], member)
    signer = [load_private_key(keys.private, None)]
    write_index(channel.directory, signer, [(entry_for("credit", "1.1.0", hostile), hostile)], 7)
    before = unchanged(store)
    report = update_once(store, channel.url)
    assert report.failed and fragment in report.outcomes[0].detail, report.lines()
    after = unchanged(store)
    assert after[0].state == before[0].state and after[1] == before[1]
    assert set(after[0].files) - {"ota.json"} == set(before[0].files) - {"ota.json"}
    assert not (tmp_path / "escaped").exists() and not (store.root / "escaped").exists()


def test_a_new_model_failing_its_selftest_is_marked_bad_and_the_pass_goes_on(
    tmp_path: Path, channel: Channel, keys: KeyFiles, built: dict[Spec, bytes]
) -> None:
    """A device that has never had the model: the failure is an outcome (the pass goes on,
    exit 3), remembered so the version is never fetched again, and a later good version
    installs."""
    device = Store.init(tmp_path / "new-device", [keys.public])
    signer = [load_private_key(keys.private, None)]
    broken = with_wrong_selftest(built[V100], keys, "1.5.0")
    write_index(channel.directory, signer, [(entry_for("credit", "1.5.0", broken), broken)], 1)
    proc = run("bundle-runtime", ["update", "--store", str(device.root), "--channel", channel.url])
    assert proc.returncode == 3, proc.stderr
    assert "credit 1.5.0: refused and marked bad: selftest failed" in proc.stdout
    model = device.state().models["credit"]
    assert (model.active, model.highest_seen, [str(v) for v in model.bad]) == (
        None,
        None,
        ["1.5.0"],
    )
    assert update_once(device, channel.url).outcomes == ()  # not fetched again
    status = run("bundle-runtime", ["status", "--store", str(device.root)])
    assert "  highest:  none (no version installed yet)" in status.stdout.splitlines()
    good = built[V110]
    files = [
        (entry_for("credit", "1.5.0", broken), broken),
        (entry_for("credit", "1.1.0", good), good),
    ]
    write_index(channel.directory, signer, files, 2)
    assert update_once(device, channel.url).outcomes[0].installed
    assert str(device.state().models["credit"].active) == "1.1.0"
