"""Hostile clients for the hostile-load test, run as a process of their own
(``python -m tests.support.hostile PORT SECONDS``) so that they take none of the measuring
process's interpreter lock. Prints what each did as one JSON object.

- ``half_open``: holds connections from several loopback addresses (every 127.0.0.x is
  loopback on Linux), each with half a request line sent, reopening each one the server closes.
- ``malformed``: new connections one after another with oversized, malformed or unscorable
  requests, each answer read and its status counted.
- ``slow_reader``: asks for large answers and reads them one byte a second.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter

HOST = "127.0.0.1"
HALF_OPEN_PEERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
_REOPEN_SECONDS = 0.05  # a slowloris client reopens what the server closed, not in a spin
def _post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nContent-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


_MALFORMED = (
    b"GARBAGE\x00\xff\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",  # 100 KB of headers
    b"POST /invocations HTTP/1.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 52428800\r\n\r\n",  # a 50 MB body declared
    b"POST /invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    _post("/invocations", b'{"instances": [[NaN, 1, 2, 3, 4, 5]]}'),
    _post("/invocations", b'{"instances": [["x", 1, 2, 3, 4, 5]]}'),
    _post("/invocations", b'{"instances": [[1, 2]]}'),  # the wrong feature count
    _post("/v2/models/credit/infer", b"{not json}"),
    _post("/invocations", b"\xff\xfe" * 100, "text/csv"),
    b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n",
)


def half_open(port: int, until: float, stats: Counter[str]) -> None:
    socks: dict[socket.socket, str] = {}
    while time.monotonic() < until:
        for peer in HALF_OPEN_PEERS:
            for _ in range(8):  # open a few more on each round, up to what the server takes
                try:
                    sock = socket.create_connection((HOST, port), 5, source_address=(peer, 0))
                    sock.sendall(b"POST /invocations HTT")
                    sock.setblocking(False)
                    socks[sock] = peer
                    stats["opened"] += 1
                except OSError:
                    stats["connect_failed"] += 1
        time.sleep(_REOPEN_SECONDS)
        for sock in list(socks):  # closed by the server: drop it, the next round reopens
            try:
                if sock.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                pass
            stats["closed_by_server"] += 1
            sock.close()
            del socks[sock]
        stats["held_max"] = max(stats["held_max"], len(socks))
    for sock in socks:
        sock.close()


def malformed(port: int, until: float, stats: Counter[str]) -> None:
    i = 0
    while time.monotonic() < until:
        request = _MALFORMED[i % len(_MALFORMED)]
        i += 1
        try:
            with socket.create_connection((HOST, port), 5, source_address=("127.0.0.6", 0)) as s:
                # refused before it was all sent: the answer may be there all the same
                with contextlib.suppress(OSError):
                    s.sendall(request)
                answer = s.recv(64)
            parts = answer.split(b" ")
            status = parts[1].decode() if answer.startswith(b"HTTP/1.1 ") else "none"
        except OSError:
            status = "reset"
        stats[status] += 1
        time.sleep(0.005)


def slow_reader(port: int, until: float, stats: Counter[str]) -> None:
    rows = json.dumps({"instances": [[1, 2, 3, 4, 5, 6]] * 5000}).encode()  # ~200 kB answer
    request = (
        b"POST /invocations HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(rows)
    ) + rows
    while time.monotonic() < until:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.bind(("127.0.0.7", 0))
        try:
            sock.settimeout(5)
            sock.connect((HOST, port))
            sock.sendall(request)
            stats["requests"] += 1
            while time.monotonic() < until and sock.recv(1):
                stats["bytes_read"] += 1
                time.sleep(1.0)
        except OSError:
            stats["closed"] += 1
        finally:
            sock.close()


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    until = time.monotonic() + seconds
    attackers = {"half_open": half_open, "malformed": malformed, "slow_reader": slow_reader}
    stats: dict[str, Counter[str]] = {name: Counter() for name in attackers}
    threads = [
        threading.Thread(target=attack, args=(port, until, stats[name]), daemon=True)
        for name, attack in attackers.items()
    ]
    threads += [  # several slow readers
        threading.Thread(target=slow_reader, args=(port, until, stats["slow_reader"]), daemon=True)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    print(json.dumps({name: dict(counts) for name, counts in stats.items()}))


if __name__ == "__main__":
    main()
