"""Which connections the server takes, and which it lets go when it is full (README "Serving on
a network").

Every connection counts against ``max_connections`` and against its peer address's
``max_connections_per_peer``, wherever it is being served. A peer over its own cap is refused
(503): one address cannot take every slot however many connections it opens. When every slot
is taken, a new connection does not get a 503 while the server holds connections that are
doing nothing for anyone: the loop closes one that waits for a request (``victim_order``).
Connections that never completed a request go before idle keep-alive ones (a half-open
connection from a slowloris client costs its sender nothing to reopen; a client that has been
answered has shown it talks HTTP); among them, those of the address holding the most
connections (a flood of new connections from one place then closes its own, not the fresh
connection of a client whose request is on its way); then the one waiting longest. And while
slots are scarce (half taken or more), a new connection must start
its first request within ``busy_first_byte_timeout`` rather than ``read_timeout``: the
slots a silent client takes come back sooner.
"""

from __future__ import annotations

import threading
from enum import Enum

from edgebundle.runtime.serve.config import ServerLimits


class Refusal(Enum):
    PEER = "peer_limit"  # its peer has max_connections_per_peer open
    FULL = "full"  # max_connections are open


class Admission:
    """The open connections, counted in all and by peer address; thread-safe (a connection
    on a worker thread is released there)."""

    def __init__(self, limits: ServerLimits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self.open = 0
        self._by_peer: dict[str, int] = {}

    def admit(self, peer: str) -> Refusal | None:
        """Count a new connection from ``peer``, or say why it is not taken."""
        limits = self._limits
        with self._lock:
            held = self._by_peer.get(peer, 0)
            if held >= limits.max_connections_per_peer:
                return Refusal.PEER
            if self.open >= limits.max_connections:
                return Refusal.FULL
            self.open += 1
            self._by_peer[peer] = held + 1
        return None

    def release(self, peer: str) -> None:
        with self._lock:
            self.open -= 1
            held = self._by_peer.pop(peer) - 1
            if held:
                self._by_peer[peer] = held

    def victim_order(self, answered: bool, peer: str, waiting_since: float) -> tuple[
        bool, int, float
    ]:
        """The sort key of a connection waiting for a request: the least is closed first
        (module docstring)."""
        return answered, -self._by_peer.get(peer, 0), waiting_since

    def first_byte_timeout(self) -> float:
        """Seconds the connection just admitted has to start its first request: less when
        half of ``max_connections`` or more were open before it."""
        limits = self._limits
        busy = 2 * (self.open - 1) >= limits.max_connections
        return limits.busy_first_byte_timeout if busy else limits.read_timeout
