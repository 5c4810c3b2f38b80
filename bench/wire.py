"""The wire limit: one ``UID FETCH 1:*`` read off a raw TLS socket, bytes counted, nothing parsed.

No client can sync faster than the server can send the same items over the
same connection, so this is the ceiling the sync is compared with.
"""
from __future__ import annotations

import socket
import ssl
import statistics
import time

# What the sync fetches until the engine publishes its own list (see fetch_items()).
DEFAULT_HEADER_FIELDS = (
    "FROM TO CC REPLY-TO DATE SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES AUTO-SUBMITTED X-AUTOREPLY "
    "X-AUTORESPOND PRECEDENCE LIST-ID LIST-UNSUBSCRIBE CONTENT-TYPE"
)
DEFAULT_ITEMS = f"UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({DEFAULT_HEADER_FIELDS})]"
# What imap-tools asks for with fetch(headers_only=True, mark_seen=False).
PEER_ITEMS = "BODY.PEEK[HEADER] UID FLAGS RFC822.SIZE"
_FETCH_MARK = b" FETCH ("
_RECV_SIZE = 1 << 20


class WireError(RuntimeError):
    """The server answered a raw command with NO/BAD."""


def fetch_items(client=None, preview_mode: str = "server") -> tuple[str, str]:
    """``(items, where they came from)``: exactly what the sync's FETCH asks for.

    The engine's metadata items, plus the preview item it adds for this server
    (``client``: a logged-in IMAPClient, used for the capability check).
    """
    try:
        from plugins.imap_inbox import fetch
    except ImportError:
        return DEFAULT_ITEMS, "default list (plugins.imap_inbox.fetch not installed)"
    items = getattr(fetch, "METADATA_ITEMS", None)
    if not items:
        return DEFAULT_ITEMS, "default list (plugins.imap_inbox.fetch has no METADATA_ITEMS)"
    source = "plugins.imap_inbox.fetch.METADATA_ITEMS"
    if client is not None and hasattr(fetch, "preview_item"):
        preview = fetch.preview_item(client, preview_mode)
        if preview:
            items = f"{items} {preview}"
            source += f" + preview_item(mode={preview_mode!r})"
    return items, source


class RawImap:
    """Just enough IMAP over TLS to send tagged commands and read replies as bytes."""

    def __init__(self, host: str, port: int, ca_file: str, timeout: float = 120.0):
        context = ssl.create_default_context(cafile=ca_file)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.tag_number = 0
        self.buffer = b""
        self._read_line()  # greeting

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _next_tag(self) -> bytes:
        self.tag_number += 1
        return b"W%04d" % self.tag_number

    def command(self, text: str) -> list[bytes]:
        """Send a command without literals; return its reply lines (small replies only)."""
        tag = self._next_tag()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self._read_line()
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise WireError(line.decode("utf-8", "replace"))
                return lines

    def login(self, username: str, password: str) -> None:
        self.command(f"LOGIN {_quote(username)} {_quote(password)}")

    def count_reply(self, text: str) -> tuple[int, int]:
        """Send a command and read its whole reply as bytes; return ``(bytes, FETCH responses)``."""
        tag = self._next_tag()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        end = b"\r\n" + tag + b" "
        total = len(self.buffer)
        fetches = self.buffer.count(_FETCH_MARK)
        keep = 512  # longer than the tagged status line
        # The line before the reply ended with CRLF, which _read_line consumed.
        tail = b"\r\n" + self.buffer[-keep:]
        self.buffer = b""
        recv = self.sock.recv
        while True:
            if end in tail:
                status = tail[tail.index(end) + len(end):]
                if b"\r\n" in status:
                    if not status.startswith(b"OK"):
                        raise WireError(status.split(b"\r\n")[0].decode("utf-8", "replace"))
                    return total, fetches
            chunk = recv(_RECV_SIZE)
            if not chunk:
                raise ConnectionError("server closed the connection during FETCH")
            total += len(chunk)
            # The overlap with the previous chunk catches marks split across reads.
            window = tail[-(len(_FETCH_MARK) - 1):] + chunk
            fetches += window.count(_FETCH_MARK)
            tail = (tail + chunk)[-keep:] if len(chunk) < keep else chunk[-keep:]

    def close(self) -> None:
        try:
            self.sock.sendall(b"Z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _connect(host: str, port: int, ca_file: str, username: str, password: str) -> RawImap:
    conn = RawImap(host, port, ca_file)
    try:
        conn.login(username, password)
    except BaseException:
        conn.close()
        raise
    return conn


def wire_fetch(host: str, port: int, ca_file: str, username: str, password: str,
               folders: list[str], items: str, passes: int = 1) -> dict:
    """Time ``UID FETCH 1:* (items)`` per folder on one logged-in connection (EXAMINE: read-only).

    With ``passes`` > 1 the last pass is the measurement and the first one's
    time is kept as ``first_pass_seconds``.
    """
    conn = _connect(host, port, ca_file, username, password)
    try:
        result: dict = {"items": items, "passes": passes, "folders": {}}
        for folder in folders:
            conn.command(f"EXAMINE {_quote(folder)}")
            times = []
            for _ in range(max(1, passes)):
                started = time.perf_counter()
                size, count = conn.count_reply(f"UID FETCH 1:* ({items})")
                times.append(time.perf_counter() - started)
            result["folders"][folder] = {"messages": count, "bytes": size, "seconds": times[-1],
                                         "first_pass_seconds": times[0]}
        for key in ("messages", "bytes", "seconds", "first_pass_seconds"):
            result[key] = sum(f[key] for f in result["folders"].values())
        result["messages_per_second"] = result["messages"] / result["seconds"] if result["seconds"] else None
        return result
    finally:
        conn.close()


def uid_next(host: str, port: int, ca_file: str, username: str, password: str, folders: list[str]) -> dict[str, int]:
    """UIDNEXT of each folder (STATUS), to warm only what arrives later."""
    conn = _connect(host, port, ca_file, username, password)
    try:
        found = {}
        for folder in folders:
            for line in conn.command(f"STATUS {_quote(folder)} (UIDNEXT)"):
                if line.startswith(b"* STATUS") and b"UIDNEXT " in line:
                    found[folder] = int(line.split(b"UIDNEXT ", 1)[1].split(b")", 1)[0].split()[0])
        return found
    finally:
        conn.close()


def warm_fetch_cache(host: str, port: int, ca_file: str, username: str, password: str, folders: list[str],
                     items: str, from_uids: dict[str, int] | None = None) -> float:
    """FETCH ``items`` once, untimed by the report, so Dovecot caches them as it would for a regular client.

    Dovecot caches header fields (and PREVIEW snippets) the first time a client
    asks for them; the targets are stated for a warm server cache. Returns
    the seconds this cold pass took.
    """
    conn = _connect(host, port, ca_file, username, password)
    started = time.perf_counter()
    try:
        for folder in folders:
            conn.command(f"EXAMINE {_quote(folder)}")
            first = (from_uids or {}).get(folder, 1)
            conn.count_reply(f"UID FETCH {first}:* ({items})")
        return time.perf_counter() - started
    finally:
        conn.close()


def noop_floor(host: str, port: int, ca_file: str, username: str, password: str, folders: list[str],
               rounds: int = 7) -> dict:
    """What a no-op sync cannot go below: connect + TLS + LOGIN, one STATUS per folder, LOGOUT.

    Returns medians in milliseconds (each round on a fresh connection, as each sync job opens one).
    """
    login_ms, status_ms, total_ms = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        conn = _connect(host, port, ca_file, username, password)
        logged_in = time.perf_counter()
        try:
            for folder in folders:
                conn.command(f"STATUS {_quote(folder)} (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
        finally:
            statused = time.perf_counter()
            conn.close()
        login_ms.append((logged_in - started) * 1000)
        status_ms.append((statused - logged_in) * 1000)
        total_ms.append((time.perf_counter() - started) * 1000)
    return {"rounds": rounds, "login_ms": round(statistics.median(login_ms), 2),
            "status_ms": round(statistics.median(status_ms), 2), "total_ms": round(statistics.median(total_ms), 2)}
