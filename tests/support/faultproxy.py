"""A fault-injecting TCP proxy for tests: byte-level, so TLS passes through it untouched.

    with FaultProxy("127.0.0.1", dovecot.imaps_port) as proxy:
        proxy.arm(Cut("down", 12_345, "rst"))    # the next connection dies after 12,345 bytes server -> client
        ...connect to 127.0.0.1:proxy.port...
        proxy.last.cut_fired                     # whether the cut happened

Every connection keeps a trace of what was forwarded (direction and size of
each chunk, in order), so a test can record a fault-free session first and
pick cut points inside its phases (login, a FETCH response ...). IMAP is
request/response, so chunk order is the conversation order.

Cut modes:

* ``rst``: forward exactly ``after`` bytes in ``direction``, then reset both
  sockets (the client sees ECONNRESET);
* ``fin``: the same, but close cleanly (the client sees EOF, possibly
  mid-literal or mid-TLS-record);
* ``stall``: stop forwarding after ``after`` bytes and keep both sockets open
  (the client sees nothing more until its read timeout).

What happens to the connections after the armed one is the ``policy``:

* ``blip``: only the next connection is broken; later ones pass (a reconnect works);
* ``outage``: once the cut happened, every new connection is reset at once
  (the server became unreachable) until the proxy is disarmed;
* ``flaky``: every connection is broken the same way (a link that always
  drops after so many bytes) until the proxy is disarmed.

``begin_outage()`` is the same outage started by the test itself, at a moment
it picks (say, from a progress callback); ``arm(None)`` ends it.

``down_rate`` (bytes per second) throttles server -> client traffic: a slow
link that makes a sync last long enough for something else to happen meanwhile.
"""
from __future__ import annotations

import dataclasses
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator

UP = "up"  # client -> server
DOWN = "down"  # server -> client
MODES = ("rst", "fin", "stall")
POLICIES = ("blip", "outage", "flaky")
CHUNK = 65536


@dataclasses.dataclass(frozen=True)
class Cut:
    """Where and how to break one connection."""

    direction: str
    after: int
    mode: str = "rst"

    def __post_init__(self) -> None:
        if self.direction not in (UP, DOWN):
            raise ValueError(f"direction must be {UP!r} or {DOWN!r}, not {self.direction!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.after < 0:
            raise ValueError("after must be >= 0")

    def __str__(self) -> str:
        return f"{self.mode} after {self.after} bytes {self.direction}"


@dataclasses.dataclass
class Trace:
    """What one proxied connection carried, in order."""

    cut: Cut | None = None
    chunks: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    sent: dict[str, int] = dataclasses.field(default_factory=lambda: {UP: 0, DOWN: 0})
    cut_fired: bool = False
    refused: bool = False  # reset on arrival (an outage)
    closed: threading.Event = dataclasses.field(default_factory=threading.Event)

    def exchanges(self) -> list[tuple[int, int, int]]:
        """``(up_bytes, down_start, down_bytes)`` per client chunk: a command and the answer it got.

        ``down_start`` is the server -> client offset where the answer begins.
        Bytes the server sent before the first client chunk (TLS hello, greeting)
        are not part of any exchange.
        """
        result: list[list[int]] = []
        down = 0
        for direction, size in self.chunks:
            if direction == UP:
                if result and result[-1][2] == 0:
                    result[-1][0] += size  # a command sent in several pieces
                else:
                    result.append([size, down, 0])
            else:
                if result:
                    result[-1][2] += size
                down += size
        return [tuple(x) for x in result]


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1",
                 down_rate: float | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.down_rate = down_rate
        self._listener = socket.create_server((listen_host, 0))
        self.host = listen_host
        self.port = self._listener.getsockname()[1]
        self._armed: Cut | None = None
        self._policy = "blip"
        self._outage = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.traces: list[Trace] = []
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)

    # ------------------------------------------------------------------ control

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def arm(self, cut: Cut | None, policy: str = "blip") -> None:
        """Break the next accepted connection as ``cut`` says, and later ones as ``policy`` says.

        ``arm(None)`` disarms: every connection from now on passes through.
        """
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        with self._lock:
            self._armed = cut
            self._policy = policy if cut is not None else "blip"
            self._outage = False

    @property
    def last(self) -> Trace:
        with self._lock:
            if not self.traces:
                raise LookupError("no connection went through the proxy yet")
            return self.traces[-1]

    def traces_since(self, count: int) -> list[Trace]:
        with self._lock:
            return list(self.traces[count:])

    def drop_all(self) -> None:
        """Reset every connection still open, stalled ones included (a sudden network failure)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock, reset=True)

    def begin_outage(self) -> None:
        """Reset every open connection and refuse new ones until ``arm(None)``: the server became unreachable."""
        with self._lock:
            self._outage = True
        self.drop_all()

    def close(self) -> None:
        self._stop.set()
        _close(self._listener)
        self.drop_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ forwarding

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut, refuse = self._armed, self._outage
                if self._policy != "flaky":
                    self._armed = None
                trace = Trace(cut=None if refuse else cut, refused=refuse)
                self.traces.append(trace)
            if refuse:
                _close(client, reset=True)
                trace.closed.set()
                continue
            threading.Thread(target=self._serve, args=(client, trace), daemon=True,
                             name=f"faultproxy-{self.port}-conn{len(self.traces)}").start()

    def _serve(self, client: socket.socket, trace: Trace) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _close(client, reset=True)
            trace.closed.set()
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update((client, server))
        try:
            self._pump(client, server, trace)
        finally:
            with self._lock:
                self._sockets.difference_update((client, server))
            trace.closed.set()

    def _pump(self, client: socket.socket, server: socket.socket, trace: Trace) -> None:
        cut = trace.cut
        peers = {client: (server, UP), server: (client, DOWN)}
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            if cut is not None and cut.after == 0 and cut.direction == UP:
                # Nothing at all goes through: cut as soon as the client connects.
                self._break(client, server, trace, selector)
                if cut.mode != "stall":
                    return
            while not self._stop.is_set():
                events = selector.select(timeout=0.5)
                for key, _ in events:
                    source = key.fileobj
                    target, direction = peers[source]
                    try:
                        data = source.recv(CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        _close(client)
                        _close(server)
                        return
                    if trace.cut_fired:  # stalled: swallow what arrives
                        continue
                    reached = cut is not None and trace.sent[direction] + len(data) >= cut.after
                    if reached and cut.direction == direction:
                        data = data[:cut.after - trace.sent[direction]]
                        if data:
                            self._forward(target, data, direction, trace)
                        self._break(client, server, trace, selector)
                        if cut.mode != "stall":
                            return
                        continue
                    if not self._forward(target, data, direction, trace):
                        _close(client)
                        _close(server)
                        return

    def _forward(self, target: socket.socket, data: bytes, direction: str, trace: Trace) -> bool:
        if direction == DOWN and self.down_rate:
            time.sleep(len(data) / self.down_rate)
        try:
            target.sendall(data)
        except OSError:
            return False
        trace.chunks.append((direction, len(data)))
        trace.sent[direction] += len(data)
        return True

    def _break(self, client: socket.socket, server: socket.socket, trace: Trace, selector) -> None:
        trace.cut_fired = True
        with self._lock:
            if self._policy == "outage":
                self._outage = True
        if trace.cut.mode == "stall":
            return
        reset = trace.cut.mode == "rst"
        _close(client, reset=reset)
        _close(server, reset=reset)


def _close(sock: socket.socket, reset: bool = False) -> None:
    try:
        if reset:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def down_ranges(trace: Trace, min_answer: int) -> Iterator[tuple[int, int]]:
    """Server -> client byte ranges ``[start, end)`` of the answers of at least ``min_answer`` bytes."""
    for _, start, size in trace.exchanges():
        if size >= min_answer:
            yield start, start + size
