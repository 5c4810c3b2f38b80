"""A small asyncio IMAP client that does only what watching needs: log in, EXAMINE, IDLE, NOOP, NOTIFY, STATUS.

Why not aioimaplib: the watcher must connect exactly as the sync does
(connection.py): to an address that was resolved and checked
(``IMAP_BLOCK_PRIVATE_HOSTS``) while TLS verifies the host name, and with
STARTTLS on port 143. aioimaplib connects by host name only and cannot
upgrade a connection to TLS. The handful of commands here are line-based;
literals (``{n}``) are read whole so a server's unusual reply cannot desync
the reader.

A hostile server meets the caps a sync meets (response_limits.py): one
literal, one line (literals included), the bytes of one command's answer and
its wall time, never above what watching needs (:data:`WATCH_CAPS`). Past one,
:class:`WatchCapExceeded` ends the connection; the watch says so in plain
words and retries later, as after any dropped connection.

Nothing here logs a command line: LOGIN and AUTHENTICATE carry the password or the access token.
"""
from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import re
import socket
import ssl
from collections.abc import Callable

from imapclient import exceptions as imap_exceptions
from imapclient import imap_utf7

from ..connection import OAUTHBEARER, AccessTokenSource, ConnectionSettings, oauth_mechanism
from ..response_limits import ResponseLimitExceeded, ResponseLimits, _duration, _size

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_UNTAGGED_COUNT = re.compile(rb"^\* (\d+) (EXISTS|EXPUNGE|RECENT)\b", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_CAPABILITY = re.compile(rb"\[?CAPABILITY ([^\]\r\n]*)", re.IGNORECASE)
_STATUS = re.compile(rb"^\* STATUS .*\(([^()]*)\)\s*$", re.IGNORECASE | re.DOTALL)
_STATUS_ITEM = re.compile(rb"(MESSAGES|UIDNEXT) (\d+)", re.IGNORECASE)
MAX_LINE = 1_000_000  # an untagged reply longer than this is not something watching needs to read
# Watching reads a few short lines per command (EXAMINE's are the most): the caps of a sync, but never
# above these, since a thousand connections may each be answering at once.
WATCH_CAPS = ResponseLimits(literal_bytes=MAX_LINE, line_bytes=MAX_LINE, response_bytes=4 * MAX_LINE)

# TCP keep-alive: a peer that vanished without a FIN (NAT timeout, pulled cable) is noticed by the kernel
# after KEEPIDLE + KEEPCNT * KEEPINTVL seconds even while IDLE is silent.
KEEPIDLE, KEEPINTVL, KEEPCNT = 60, 20, 3


# asyncio gives every TLS connection a 256 KiB receive buffer (SSLProtocol.max_size), sized for bulk
# transfers: 250 MB at a thousand idle connections. The buffer is only the chunk handed from the socket to
# the TLS layer, which keeps what it has not decrypted yet (its MemoryBIO), so its size bounds how much is
# read per wake-up, not how long a record or an answer may be. A watch reads a few hundred bytes per
# command: 2 KiB holds such an answer in one read and costs 2 MB at a thousand connections, where one TLS
# record's worth (16 KiB) cost 17 MB (measured in bench/README.md, live section). Only the watcher calls this.
TLS_READ_BUFFER = 2 * 1024


def use_small_tls_buffers() -> None:
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


class ImapClosed(ConnectionError):
    """The server closed the connection or answered something this client cannot follow."""


class WatchCapExceeded(ResponseLimitExceeded, ImapClosed):
    """Past a cap: a dropped connection to the watch (it retries), "too much data" to classify_error."""

    def __str__(self) -> str:
        if self.too_slow:
            return f"the server answered too slowly ({self.reason})"
        return f"the server sent more data than expected ({self.reason})"


def watch_caps(limits: ResponseLimits | None) -> ResponseLimits:
    """The stricter of ``limits`` (the configured ones) and WATCH_CAPS, cap by cap."""
    limits = limits or ResponseLimits()
    return ResponseLimits(literal_bytes=min(limits.literal_bytes, WATCH_CAPS.literal_bytes),
                          line_bytes=min(limits.line_bytes, WATCH_CAPS.line_bytes),
                          response_bytes=min(limits.response_bytes, WATCH_CAPS.response_bytes),
                          command_seconds=limits.command_seconds)


class CommandFailed(Exception):
    """A command got NO or BAD; ``text`` is the server's words."""

    def __init__(self, command: str, status: str, text: str):
        self.command = command
        self.status = status
        self.text = text
        super().__init__(f"{command} {status}: {text}")


class IdleClient:
    """One IMAP connection. Open it with :meth:`open`; every wait is bounded by ``timeout`` seconds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float,
                 limits: ResponseLimits | None = None):
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.limits = watch_caps(limits)
        self._tag = 0
        self.capabilities: frozenset[str] = frozenset()
        self._answer_bytes = 0  # read since the last command was sent (the greeting counts as one)
        self._answer_deadline: float | None = None  # loop time by which the answer must be complete
        # The one other mailbox followed (the Sent folder): its last STATUS, and whether the server pushes it.
        self._followed: dict[str, int] | None = None
        self.follow_pushed = False

    @classmethod
    async def open(cls, settings: ConnectionSettings, address: str, context: ssl.SSLContext) -> IdleClient:
        """Connect to ``address`` (already checked), verify TLS against ``settings.host``, read the greeting."""
        implicit_tls = settings.security == "ssl"
        limits = watch_caps(settings.limits)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, settings.port, ssl=context if implicit_tls else None,
                                    server_hostname=settings.host if implicit_tls else None,
                                    limit=limits.line_bytes),
            settings.timeout)
        _keep_alive(writer)
        _forget_peer_certificate(writer)
        client = cls(reader, writer, settings.timeout, limits)
        try:
            client._expect_answer()
            greeting = await client._read_line()
            if not greeting.upper().startswith((b"* OK", b"* PREAUTH")):
                raise ImapClosed(f"unexpected greeting: {greeting[:100]!r}")
            client._note_capabilities(greeting)
            if not implicit_tls:
                await client._starttls(settings, context)
        except BaseException:
            client.close()
            raise
        return client

    async def _starttls(self, settings: ConnectionSettings, context: ssl.SSLContext) -> None:
        if not self.capabilities:
            await self.command("CAPABILITY")
        if "STARTTLS" not in self.capabilities:
            raise imap_exceptions.CapabilityError("Server does not support STARTTLS")
        await self.command("STARTTLS")
        await asyncio.wait_for(self._writer.start_tls(context, server_hostname=settings.host), self.timeout)
        _forget_peer_certificate(self._writer)
        self.capabilities = frozenset()  # what the server said before TLS may not be trusted

    async def login(self, username: str, password: str) -> None:
        """LOGIN (ASCII), or AUTHENTICATE PLAIN for UTF-8; a refusal raises imapclient's LoginError.

        LoginError lets connection.classify_error word it exactly as for a sync (wrong password, app
        password needed, IMAP turned off).
        """
        if not self.capabilities:
            await self.command("CAPABILITY")
        try:
            if (username + password).isascii():
                await self.command("LOGIN", _quote(username), _quote(password))
            else:
                if "AUTH=PLAIN" not in self.capabilities:
                    raise UnicodeEncodeError("ascii", "", 0, 1, "non-ASCII credentials")
                token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
                await self.command("AUTHENTICATE", "PLAIN", continuation=token)
        except CommandFailed as exc:
            raise imap_exceptions.LoginError(exc.text) from None
        if not any(c.startswith("IDLE") for c in self.capabilities) or len(self.capabilities) < 2:
            await self.command("CAPABILITY")  # many servers announce more once logged in

    async def login_oauth(self, settings: ConnectionSettings, blocking: Callable) -> None:
        """Sign in with the inbox's OAuth 2.0 access token, with the mechanism the sync would use.

        ``blocking`` runs the token source's HTTP calls off the event loop (``await blocking(func)``). A kept
        token the server refuses is refreshed once and tried again, as the sync does; a refusal raises
        imapclient's LoginError, worded by connection.classify_error as for a sync (sign in again...).
        """
        if not self.capabilities:
            await self.command("CAPABILITY")
        mechanism = oauth_mechanism(self.capabilities, settings.host)
        tokens: AccessTokenSource = settings.access_tokens
        token = await blocking(tokens.current)
        try:
            await self._authenticate(mechanism, settings.username, token)
        except imap_exceptions.LoginError:
            if tokens.fresh:
                raise
            await self._authenticate(mechanism, settings.username, await blocking(tokens.refresh))
        if not any(c.startswith("IDLE") for c in self.capabilities) or len(self.capabilities) < 2:
            await self.command("CAPABILITY")

    async def _authenticate(self, mechanism: str, username: str, token: str) -> None:
        if mechanism == OAUTHBEARER:  # RFC 7628 3.1; a refusal's error challenge is answered with ^A
            gs2_header = "n,a=" + username.replace("=", "=3D").replace(",", "=2C") + ","
            response, after_error = f"{gs2_header}\x01auth=Bearer {token}\x01\x01", "AQ=="
        else:  # XOAUTH2: Google's and Microsoft's; its error challenge is answered with an empty line
            response, after_error = f"user={username}\x01auth=Bearer {token}\x01\x01", ""
        try:
            await self.command("AUTHENTICATE", mechanism, continuation=base64.b64encode(response.encode()).decode(),
                               error_challenge=after_error)
        except CommandFailed as exc:
            raise imap_exceptions.LoginError(exc.text) from None

    async def examine(self, mailbox: str = "INBOX") -> dict[str, int]:
        """Open ``mailbox`` read-only; returns its EXISTS and UIDNEXT as far as the server told."""
        state: dict[str, int] = {}
        for line in await self.command("EXAMINE", _quote(mailbox)):
            count = _UNTAGGED_COUNT.match(line)
            if count and count.group(2).upper() == b"EXISTS":
                state["exists"] = int(count.group(1))
            uidnext = _UIDNEXT.search(line)
            if uidnext:
                state["uidnext"] = int(uidnext.group(1))
        return state

    async def follow(self, mailbox: str) -> dict[str, int]:
        """Follow a second mailbox beside the selected one; returns its MESSAGES and UIDNEXT.

        Where the server offers NOTIFY (RFC 5465) its changes are pushed while idle and reported as
        ``on_change(b"STATUS")`` (``follow_pushed`` is then true); elsewhere :meth:`check_followed`
        asks for them. Call after :meth:`examine`.
        """
        name = _quote_mailbox(mailbox)
        self._followed = {}
        if "NOTIFY" in self.capabilities:
            try:
                lines = await self.command(
                    "NOTIFY", "SET", "STATUS", "(SELECTED (MessageNew MessageExpunge))",
                    f"(MAILBOXES {name} (MessageNew MessageExpunge))")
                self._followed = _status_state(lines)
                self.follow_pushed = bool(self._followed)
            except CommandFailed:
                self.follow_pushed = False  # e.g. NOTIFY refused for this mailbox: asked for instead
        if not self.follow_pushed:
            self._followed = _status_state(await self.command("STATUS", name, "(MESSAGES UIDNEXT)"))
        return dict(self._followed)

    async def check_followed(self, mailbox: str, on_change: Callable[[bytes], None]) -> None:
        """Ask for the followed mailbox's STATUS; a change is reported as ``on_change(b"STATUS")``."""
        for line in await self.command("STATUS", _quote_mailbox(mailbox), "(MESSAGES UIDNEXT)"):
            self._note_change(line, on_change)

    async def noop(self, on_change: Callable[[bytes], None]) -> None:
        """NOOP; mail that arrived between two IDLEs is reported in its answer, so it is passed on too."""
        for line in await self.command("NOOP"):
            self._note_change(line, on_change)

    async def idle(self, seconds: float, on_change: Callable[[bytes], None]) -> None:
        """IDLE for ``seconds``, calling ``on_change(kind)`` for each EXISTS/EXPUNGE, then DONE.

        A connection quiet for longer than ``seconds + timeout`` after DONE is dead: ImapClosed or
        TimeoutError is raised, and the caller reconnects.
        """
        tag = self._next_tag()
        self._send(f"{tag} IDLE")
        while True:
            line = await self._read_line()
            if line.startswith(b"+"):
                self._answer_deadline = None  # idling may last as long as asked; its bytes still count
                break
            if line.startswith(tag.encode()):
                raise CommandFailed("IDLE", _status(line, tag), _text(line, tag))
            self._note_change(line, on_change)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                line = await self._read_line(first_wait=remaining)
            except TimeoutError:
                break
            if line.startswith(b"* BYE"):
                raise ImapClosed(_text(line, "*"))
            self._note_change(line, on_change)
        self._send("DONE")
        self._expect_answer()
        while True:
            line = await self._read_line()
            if line.startswith(tag.encode()):
                status = _status(line, tag)
                if status != "OK":
                    raise CommandFailed("IDLE", status, _text(line, tag))
                return
            self._note_change(line, on_change)

    async def logout(self) -> None:
        try:
            await asyncio.wait_for(self.command("LOGOUT"), 5)
        except (OSError, TimeoutError, ImapClosed, CommandFailed, asyncio.IncompleteReadError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()

    async def command(self, name: str, *args: str, continuation: str | None = None,
                      error_challenge: str | None = None) -> list[bytes]:
        """Send a command, return its untagged lines; NO/BAD raise CommandFailed.

        ``continuation`` answers the server's first continuation request; ``error_challenge`` answers one
        more (a SASL mechanism's error report, after which the server says NO).
        """
        tag = self._next_tag()
        self._send(" ".join((tag, name, *args)))
        untagged: list[bytes] = []
        while True:
            line = await self._read_line()
            if line.startswith(b"+"):
                if continuation is None:
                    if error_challenge is None:
                        raise ImapClosed(f"{name}: unexpected continuation request")
                    continuation, error_challenge = error_challenge, None
                self._send(continuation)
                continuation = None
                continue
            if line.startswith(tag.encode() + b" "):
                self._note_capabilities(line)
                status = _status(line, tag)
                if status != "OK":
                    raise CommandFailed(name, status, _text(line, tag))
                return untagged
            if line.startswith(b"* BYE") and name != "LOGOUT":
                raise ImapClosed(_text(line, "*"))
            self._note_capabilities(line)
            untagged.append(line)

    def _note_change(self, line: bytes, on_change: Callable[[bytes], None]) -> None:
        count = _UNTAGGED_COUNT.match(line)
        if count and count.group(2).upper() in (b"EXISTS", b"EXPUNGE"):
            on_change(count.group(2).upper())
        elif self._followed is not None and line[:9].upper() == b"* STATUS ":
            state = _status_state([line])
            if state and state != self._followed:  # servers repeat an unchanged STATUS, e.g. as IDLE starts
                self._followed = state
                on_change(b"STATUS")

    def _note_capabilities(self, line: bytes) -> None:
        found = _CAPABILITY.search(line)
        if found and (line.startswith(b"* CAPABILITY") or b"[CAPABILITY" in line.upper()):
            self.capabilities = _shared_capabilities(found.group(1))

    def _next_tag(self) -> str:
        self._tag += 1
        self._expect_answer()
        return f"W{self._tag}"

    def _expect_answer(self) -> None:
        """A command was sent (or the greeting is due): its answer's byte count and clock start now."""
        self._answer_bytes = 0
        self._answer_deadline = asyncio.get_running_loop().time() + self.limits.command_seconds

    def _send(self, line: str) -> None:
        self._writer.write(line.encode() + b"\r\n")

    async def _read_line(self, first_wait: float | None = None) -> bytes:
        """One response line with its literals inlined; its start waits ``first_wait`` (else ``timeout``).

        Within the caps: raises WatchCapExceeded before a literal or a line past its cap is read whole.
        """
        limits = self.limits
        parts = []
        length = 0
        wait = first_wait if first_wait is not None else self.timeout
        while True:
            try:
                chunk = await self._within_deadline(self._reader.readuntil(b"\r\n"), wait)
            except asyncio.IncompleteReadError:
                raise ImapClosed("the server closed the connection") from None
            except asyncio.LimitOverrunError:
                raise self._over(f"one line was longer than {_size(limits.line_bytes)}") from None
            parts.append(chunk)
            length += len(chunk)
            self._count(length, len(chunk))
            wait = self.timeout
            literal = _LITERAL.search(chunk)
            if not literal:
                return b"".join(parts)
            size = int(literal.group(1))
            if size > limits.literal_bytes:
                raise self._over(f"it announced a block of {_size(size)}; at most "
                                 f"{_size(limits.literal_bytes)} is accepted")
            self._count(length + size, size)
            try:
                parts.append(await self._within_deadline(self._reader.readexactly(size), self.timeout))
            except asyncio.IncompleteReadError:
                raise ImapClosed("the server closed the connection") from None
            length += size

    def _count(self, line_length: int, read: int) -> None:
        if line_length > self.limits.line_bytes:
            raise self._over(f"one line was longer than {_size(self.limits.line_bytes)}")
        self._answer_bytes += read
        if self._answer_bytes > self.limits.response_bytes:
            raise self._over(f"one answer was larger than {_size(self.limits.response_bytes)}")

    async def _within_deadline(self, read, wait: float):
        """``read``, waiting at most ``wait`` seconds and never past the command's deadline.

        asyncio.timeout rather than wait_for: wait_for wraps ``read`` in a task of its own, which a thousand
        idle connections would each keep for as long as they idle.
        """
        if self._answer_deadline is not None:
            left = self._answer_deadline - asyncio.get_running_loop().time()
            if left < wait:
                try:
                    async with asyncio.timeout(max(left, 0)):
                        return await read
                except TimeoutError:
                    raise self._over(f"it took longer than {_duration(self.limits.command_seconds)} to answer "
                                     "one command", too_slow=True) from None
        async with asyncio.timeout(wait):
            return await read

    def _over(self, reason: str, *, too_slow: bool = False) -> WatchCapExceeded:
        self.close()  # nothing more is read from a server past a cap
        return WatchCapExceeded(reason, too_slow=too_slow)


_capability_sets: dict[bytes, frozenset[str]] = {}


def _shared_capabilities(raw: bytes) -> frozenset[str]:
    """One set per distinct answer: a thousand connections to one server say the same ~40 words."""
    found = _capability_sets.get(raw)
    if found is None:
        found = frozenset(c.upper() for c in raw.decode("ascii", "replace").split())
        if len(_capability_sets) < 1000:
            _capability_sets[raw] = found
    return found


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_mailbox(name: str) -> str:
    """A mailbox name as IMAP spells it: modified UTF-7 (RFC 3501), quoted."""
    return _quote(imap_utf7.encode(name).decode("ascii"))


def _status_state(lines: list[bytes]) -> dict[str, int]:
    """MESSAGES and UIDNEXT of the last ``* STATUS`` line among ``lines`` ({} when there is none)."""
    state: dict[str, int] = {}
    for line in lines:
        found = _STATUS.match(line)
        if found:
            state = {key.decode().lower(): int(value) for key, value in _STATUS_ITEM.findall(found.group(1))}
    return state


def _status(line: bytes, tag: str) -> str:
    rest = line[len(tag):].strip().split(b" ", 1)
    return rest[0].decode("ascii", "replace").upper() if rest and rest[0] else ""


def _text(line: bytes, tag: str) -> str:
    rest = line[len(tag):].strip().split(b" ", 1)
    return rest[1].decode("utf-8", "replace").strip() if len(rest) > 1 else ""


def _forget_peer_certificate(writer: asyncio.StreamWriter) -> None:
    """Drop the server's certificate that asyncio keeps decoded for the connection's life.

    The handshake has verified it (chain and host name) by now, and nothing here reads it again, but
    asyncio stores it as a dict of tuples (``get_extra_info("peercert")``, 28 objects, 1.8 KB a connection,
    1.8 MB at a thousand; measured with tracemalloc, bench/README.md live section). asyncio offers no way
    to decline it, so its extra-info dict is trimmed; if that private attribute ever moves, the cert simply
    stays.
    """
    extra = getattr(getattr(writer.transport, "_ssl_protocol", None), "_extra", None)
    if isinstance(extra, dict):
        extra.pop("peercert", None)


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", KEEPIDLE), ("TCP_KEEPINTVL", KEEPINTVL), ("TCP_KEEPCNT", KEEPCNT)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        pass  # keep-alive is a second line of defence; the NOOP between IDLEs is the first
