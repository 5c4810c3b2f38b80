"""Misbehaving servers on loopback, for the tests of what a hostile or broken IMAP server can do.

:class:`LoopbackServer` accepts connections (optionally over TLS with the test Dovecot's certificate, so a
client trusting the test CA verifies it) and hands each one to a ``session`` function. It records every
line it receives, so a test can tell whether a password or a LOGIN ever reached it.
"""
from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Callable


class Connection:
    """One accepted connection: send bytes, read the client's lines (each one is recorded)."""

    def __init__(self, sock: socket.socket, server: LoopbackServer):
        self.sock = sock
        self.server = server
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes | None:
        """The next line the client sent, without CRLF; None when it closed the connection."""
        while b"\r\n" not in self._buffer:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        self.server.received.append(line)
        return line


Session = Callable[[Connection], None]


class LoopbackServer:
    """A TCP (or TLS) listener on 127.0.0.1 running ``session`` for each connection, in a thread."""

    def __init__(self, session: Session, *, cert_file: str | None = None, key_file: str | None = None):
        self.session = session
        self.received: list[bytes] = []
        self.connections = 0
        self.context = None
        if cert_file:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert_file, key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(sock)
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(120)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_side=True)
                self._open.append(sock)
            self.session(Connection(sock, self))
        except (OSError, ssl.SSLError):
            pass  # the client hung up, which is what the tests make it do
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def saw_login(self) -> bool:
        """Whether a LOGIN or AUTHENTICATE command reached this server."""
        return any(re.search(rb"^\S+ (LOGIN|AUTHENTICATE)\b", line, re.I) for line in self.received)

    def saw_secret(self, secret: str) -> bool:
        """Whether ``secret`` reached this server, as typed or base64 (AUTHENTICATE PLAIN)."""
        everything = b"\n".join(self.received)
        return secret.encode() in everything or base64.b64encode(secret.encode())[:-4] in everything

    def close(self) -> None:
        # shutdown() wakes the accept() that _serve blocks in; close() alone does not (on Linux).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


CAPABILITIES = b"IMAP4rev1 LITERAL+ AUTH=PLAIN"


def agreeable_imap(conn: Connection, *, after_login: Callable[[Connection, bytes, bytes], bool] | None = None,
                   ) -> None:
    """An IMAP server that says yes to everything (a LOGIN too); ``after_login(conn, tag, line)`` may answer
    a command itself (return True) once logged in, e.g. with far too much data."""
    conn.send(b"* OK [CAPABILITY " + CAPABILITIES + b"] ready\r\n")
    logged_in = False
    while (line := conn.read_line()) is not None:
        tag, _, rest = line.partition(b" ")
        command = rest.split(b" ", 1)[0].upper()
        if command == b"CAPABILITY":
            conn.send(b"* CAPABILITY " + CAPABILITIES + b"\r\n" + tag + b" OK done\r\n")
        elif command == b"LOGOUT":
            conn.send(b"* BYE bye\r\n" + tag + b" OK done\r\n")
            return
        elif command == b"LOGIN":
            logged_in = True
            conn.send(tag + b" OK [CAPABILITY " + CAPABILITIES + b"] logged in\r\n")
        elif logged_in and after_login is not None and after_login(conn, tag, line):
            continue
        else:
            conn.send(tag + b" OK done\r\n")
