"""Logging in to an IMAP server safely, and explaining failures in plain words.

* TLS always, with certificate verification: implicit TLS ("ssl", port 993)
  or STARTTLS ("starttls", port 143). A server that does not offer STARTTLS is
  refused; there is no unencrypted login.
* With ``IMAP_BLOCK_PRIVATE_HOSTS`` the host is resolved first, every address
  is checked, and the socket connects to a checked address while TLS still
  verifies the certificate against the host name (no DNS-rebinding window).
* Every failure becomes an :class:`ImapConnectError` with a ``kind``, a plain
  ``message``, a ``hint`` and whether it is ``permanent`` (settings or
  credentials must change) or transient (retry later).
"""
from __future__ import annotations

import dataclasses
import errno
import imaplib
import ipaddress
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Protocol

from flask import current_app, has_app_context
from imapclient import IMAPClient
from imapclient import exceptions as imap_exceptions
from imapclient import tls as imap_tls

from .ca_certificates import CaCertificateRefused, path_refusal, resolve_ca_file
from .response_limits import BoundedReader, ResponseGuard, ResponseLimitExceeded, ResponseLimits

log = logging.getLogger(__name__)

# imaplib's own line limit steps aside: ResponseLimits.line_bytes (response_limits.py) is the one that holds.
imaplib._MAXLINE = sys.maxsize - 1

# The server hung up (BYE, reset, EOF) rather than answering NO: a new connection may get further.
DROPPED = (imaplib.IMAP4.abort, imap_exceptions.IMAPClientAbortError, ConnectionError, EOFError, ssl.SSLEOFError,
           ssl.SSLZeroReturnError)

SECURITY_MODES = ("ssl", "starttls")
DEFAULT_PORTS = {"ssl": 993, "starttls": 143}

AUTH_FAILED = "auth_failed"
APP_PASSWORD_REQUIRED = "app_password_required"
IMAP_DISABLED = "imap_disabled"
HOST_NOT_FOUND = "host_not_found"
TLS_ERROR = "tls_error"
CERTIFICATE_UNTRUSTED = "certificate_untrusted"
CERTIFICATE_NAME_MISMATCH = "certificate_name_mismatch"
NO_TLS = "no_tls"
NOT_IMAP = "not_imap"
CA_FILE_INVALID = "ca_file_invalid"
TIMEOUT = "timeout"
CONNECTION_REFUSED = "connection_refused"
STARTTLS_UNAVAILABLE = "starttls_unavailable"
PRIVATE_HOST_BLOCKED = "private_host_blocked"
SERVER_ERROR = "server_error"
TOO_MUCH_DATA = "too_much_data"
TOO_SLOW = "too_slow"

# OAuth 2.0 mailboxes: the sign-in must be done again; the service refused our app; it could not be reached;
# the IMAP server offers no OAuth login.
SIGN_IN_AGAIN = "sign_in_again"
OAUTH_APP_REJECTED = "oauth_app_rejected"
OAUTH_UNREACHABLE = "oauth_unreachable"
OAUTH_NOT_OFFERED = "oauth_not_offered"


KINDS = (AUTH_FAILED, APP_PASSWORD_REQUIRED, IMAP_DISABLED, HOST_NOT_FOUND, TLS_ERROR, CERTIFICATE_UNTRUSTED,
         CERTIFICATE_NAME_MISMATCH, NO_TLS, NOT_IMAP, CA_FILE_INVALID, TIMEOUT, CONNECTION_REFUSED,
         STARTTLS_UNAVAILABLE, PRIVATE_HOST_BLOCKED, SERVER_ERROR, TOO_MUCH_DATA, TOO_SLOW, SIGN_IN_AGAIN,
         OAUTH_APP_REJECTED, OAUTH_UNREACHABLE, OAUTH_NOT_OFFERED)

# Where the CA certificate must be, said the same way by every hint, the form and the docs.
CA_FILE_WHERE = ("the full path of a PEM file in the CA directory (CRM_IMAP_CA_DIR), or upload the PEM "
                 "file")


class AccessTokenSource(Protocol):
    """Where an OAuth 2.0 mailbox's access tokens come from (oauth_tokens.AccessTokens)."""

    fresh: bool  # the last token handed out came straight from the service

    def current(self) -> str: ...

    def refresh(self) -> str: ...


@dataclasses.dataclass
class ConnectionSettings:
    """Where and how to log in: with ``password``, or with ``access_tokens`` (SASL XOAUTH2 / OAUTHBEARER).
    ``repr`` shows neither."""

    host: str
    port: int = 993
    security: str = "ssl"
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    ca_file: str | None = None
    # CA files are only read inside this directory (IMAP_CA_DIR; "" allows none). None: whoever built these
    # settings vouches for ca_file (a script or test of its own), as account.settings_for never does.
    ca_dir: str | None = None
    ca_pem: str | None = dataclasses.field(default=None, repr=False)  # an uploaded CA certificate
    timeout: float = 30
    limits: ResponseLimits = dataclasses.field(default_factory=ResponseLimits)
    # time.monotonic() by which a sync run must be over (None: no run limit, e.g. the login check).
    run_deadline: float | None = None
    access_tokens: AccessTokenSource | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.host = (self.host or "").strip()
        if not self.host:
            raise ValueError("The IMAP server name is missing.")
        if self.security not in SECURITY_MODES:
            raise ValueError("Security must be 'ssl' (SSL/TLS) or 'starttls'; unencrypted IMAP is not allowed.")
        try:
            self.port = int(self.port)
        except (TypeError, ValueError):
            raise ValueError("The port must be a number, usually 993 (SSL/TLS) or 143 (STARTTLS).") from None
        if not 0 < self.port < 65536:
            raise ValueError("The port must be between 1 and 65535, usually 993 (SSL/TLS) or 143 (STARTTLS).")
        self.ca_file = self.ca_file or None
        self.ca_pem = self.ca_pem or None


class ImapConnectError(Exception):
    """Logging in failed; ``message`` and ``hint`` are plain words for the admin, never with the password."""

    def __init__(self, kind: str, message: str, hint: str = "", permanent: bool | None = None):
        self.kind = kind
        self.message = message
        self.hint = hint
        self.permanent = _PERMANENT.get(kind, False) if permanent is None else permanent
        super().__init__(message)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "hint": self.hint, "permanent": self.permanent}


# Settings or credentials must change before trying again makes sense.
_PERMANENT = {
    AUTH_FAILED: True,
    APP_PASSWORD_REQUIRED: True,
    IMAP_DISABLED: True,
    HOST_NOT_FOUND: True,
    TLS_ERROR: True,
    CERTIFICATE_UNTRUSTED: True,
    CERTIFICATE_NAME_MISMATCH: True,
    NO_TLS: True,
    NOT_IMAP: False,  # also what a connection cut during the greeting looks like
    CA_FILE_INVALID: True,
    STARTTLS_UNAVAILABLE: True,
    PRIVATE_HOST_BLOCKED: True,
    TIMEOUT: False,
    CONNECTION_REFUSED: False,
    SERVER_ERROR: False,
    # The next sync resumes from its checkpoint, within the same caps.
    TOO_MUCH_DATA: False,
    TOO_SLOW: False,
    SIGN_IN_AGAIN: True,
    OAUTH_APP_REJECTED: True,
    OAUTH_UNREACHABLE: False,
    OAUTH_NOT_OFFERED: True,
}


class _Guarded:
    """Every read of the connection goes through a BoundedReader (imaplib and imapclient assign ``file``
    on connect and after STARTTLS), and every command (a new tag) restarts the per-command caps."""

    _guard: ResponseGuard

    @property
    def file(self):
        return self.__dict__.get("_bounded_file")

    @file.setter
    def file(self, raw) -> None:
        self.__dict__["_bounded_file"] = None if raw is None else BoundedReader(raw, self._guard)
        self._guard.sock = self.sock  # imaplib sets sock just before file, on connect and after STARTTLS

    def _new_tag(self):
        self._guard.start_command()
        return super()._new_tag()

    def shutdown(self) -> None:
        self._guard.stop()
        super().shutdown()


class _PinnedTLS(_Guarded, imap_tls.IMAP4_TLS):
    """Implicit TLS to a checked address, verifying the certificate against the host name."""

    def __init__(self, host, port, address, ssl_context, timeout, guard):
        self._address = address
        self._guard = guard
        super().__init__(host, port, ssl_context, timeout)

    def _create_socket(self, timeout=None):
        sock = socket.create_connection((self._address, self.port), timeout=timeout or self._timeout)
        try:
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _PinnedPlain(_Guarded, imaplib.IMAP4):
    """The plain connection STARTTLS upgrades; imaplib verifies against ``self.host`` (the name)."""

    def __init__(self, host, port, address, timeout, guard):
        self._address = address
        self._timeout = timeout
        self._guard = guard
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout=None):
        return socket.create_connection((self._address, self.port), timeout=timeout or self._timeout)


class _Client(IMAPClient):
    """IMAPClient connecting to one already-resolved (and checked) address, within ``limits``."""

    def __init__(self, host, port, address, *, ssl, ssl_context, timeout, limits, run_deadline):
        self._address = address
        self._guard = ResponseGuard(limits, run_deadline)
        super().__init__(host, port=port, ssl=ssl, ssl_context=ssl_context, timeout=timeout)

    def _create_IMAP4(self):
        timeout = getattr(self._timeout, "connect", None)
        try:
            if self.ssl:
                return _PinnedTLS(self.host, self.port, self._address, self.ssl_context, timeout, self._guard)
            return _PinnedPlain(self.host, self.port, self._address, timeout, self._guard)
        except BaseException:
            self._guard.stop()
            raise


def connect(settings: ConnectionSettings) -> IMAPClient:
    """Return a logged-in IMAPClient over verified TLS; raises ImapConnectError."""
    client = None
    try:
        context = _tls_context(settings)
        client = _open(settings, context)
        if settings.security == "starttls":
            if b"STARTTLS" not in client.capabilities():
                raise ImapConnectError(
                    STARTTLS_UNAVAILABLE,
                    f"The server {settings.host} does not offer STARTTLS on port {settings.port}, "
                    "so the connection cannot be encrypted.",
                    "Use SSL/TLS (usually port 993) instead. The password is never sent unencrypted.",
                )
            client.starttls(context)
        _login(client, settings)
        return client
    except Exception as exc:
        if client is not None:
            _close_quietly(client)
        raise classify_error(exc, settings) from _without_secrets(exc)


def check_login(settings: ConnectionSettings) -> None:
    """Log in and out once; raises ImapConnectError with a plain reason when it fails."""
    client = connect(settings)
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the login worked, which is all we wanted to know
        _close_quietly(client)


def close(client: IMAPClient) -> None:
    """Log out, or drop the connection when the server is already gone."""
    try:
        client.logout()
    except Exception:  # noqa: BLE001
        _close_quietly(client)


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001
        pass


_contexts: dict[tuple[str | None, float, str | None], ssl.SSLContext] = {}


def _tls_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """A verifying TLS context, cached: loading the system CA store on every login costs milliseconds.

    A CA file outside the CA directory (an inbox saved before there was one) is refused here, before it
    is opened, in the same words as any other unusable CA file.
    """
    ca_file = settings.ca_file
    if ca_file and settings.ca_dir is not None:
        try:
            ca_file = resolve_ca_file(ca_file, settings.ca_dir)
        except CaCertificateRefused as exc:
            raise _ca_file_invalid(str(exc)) from None
    stamp = os.path.getmtime(ca_file) if ca_file and os.path.isfile(ca_file) else 0.0
    key = (ca_file, stamp, settings.ca_pem)
    context = _contexts.get(key)
    if context is None:
        context = _new_tls_context(ca_file, settings.ca_pem, settings.ca_dir)
        if len(_contexts) < 64:
            _contexts[key] = context
    return context


def _new_tls_context(ca_file: str | None, ca_pem: str | None, ca_dir: str | None) -> ssl.SSLContext:
    if ca_file or ca_pem:
        try:
            context = ssl.create_default_context(cafile=ca_file, cadata=ca_pem)
        except (OSError, ssl.SSLError, ValueError) as exc:
            # Missing, unreadable or not PEM: one message, so the check tells nothing about the server's files.
            if not ca_file:
                message = "The uploaded CA certificate cannot be loaded."
            elif ca_dir is None:
                message = "This CA file cannot be used: it is missing, unreadable or not a PEM certificate."
            else:
                message = path_refusal(ca_dir)
            raise _ca_file_invalid(message) from exc
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _ca_file_invalid(message: str) -> ImapConnectError:
    return ImapConnectError(
        CA_FILE_INVALID, message,
        f"In CA file, enter {CA_FILE_WHERE}: the certificate of the authority that signed the mail server's "
        "certificate.")


# Words that switch IMAP_BLOCK_PRIVATE_HOSTS off when it arrives as text (CRM_IMAP_BLOCK_PRIVATE_HOSTS=False).
_OFF_WORDS = ("", "0", "false", "no", "off")


def _block_private_hosts() -> bool:
    """On unless the configuration says off (the tests and ``make demo`` do, their servers are on loopback).

    Outside an app (a script using this module on its own) there is no configuration to read: off.
    """
    if not has_app_context():
        return False
    value = current_app.config.get("IMAP_BLOCK_PRIVATE_HOSTS", True)
    if isinstance(value, str):  # any other word keeps the block on: the safe side
        return value.strip().lower() not in _OFF_WORDS
    return bool(value)


# NAT64 prefixes (RFC 6052 well-known, RFC 8215 local use): the last 32 bits are the IPv4 address reached.
_NAT64_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition address leads to: mapped, IPv4-compatible, NAT64, 6to4, Teredo."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if int(ip) >> 32 == 0:  # ::a.b.c.d, the deprecated IPv4-compatible form
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in network for network in _NAT64_NETWORKS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address (not loopback, private, link-local ...).

    An IPv6 address that carries an IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible or -mapped) is
    public only when that IPv4 address is too: 64:ff9b::7f00:1 reaches 127.0.0.1 through a NAT64 gateway.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is that IPv4 address, whatever the IPv6 tables say
        if any(not (v4.is_global and not v4.is_multicast) for v4 in embedded):
            return False
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order (no duplicates)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def refuse_private_addresses(host: str, addresses: list[str]) -> None:
    """Raise PRIVATE_HOST_BLOCKED when ``host`` resolved to any private, loopback or link-local address."""
    if any(not is_public_address(a) for a in addresses):
        # Not which address: the page would tell anyone what internal names resolve to.
        raise ImapConnectError(
            PRIVATE_HOST_BLOCKED,
            f"{host} points to a private or local network address, which this installation does not allow.",
            "Use the mail server's public host name. An administrator can allow private hosts by "
            "setting IMAP_BLOCK_PRIVATE_HOSTS to False.",
        )


def _open(settings: ConnectionSettings, context: ssl.SSLContext) -> IMAPClient:
    addresses = resolve(settings.host, settings.port)
    if _block_private_hosts():
        refuse_private_addresses(settings.host, addresses)
    last_error: Exception | None = None
    for address in addresses:
        try:
            client = _Client(settings.host, settings.port, address, ssl=settings.security == "ssl",
                             ssl_context=context, timeout=settings.timeout, limits=settings.limits,
                             run_deadline=settings.run_deadline)
        except (ssl.SSLError, ssl.CertificateError):
            raise  # the certificate is the same whichever address answered
        except imaplib.IMAP4.error as exc:
            if _is_imap_status(str(exc)):
                raise  # an IMAP server that said no (* BYE too many connections): its words may help
            # Whatever answered is not IMAP (an SSH or HTTP banner, a hang-up before any greeting): never
            # show its bytes. Transient: a connection cut during the greeting looks just the same.
            raise nothing_there(settings, NOT_IMAP) from None
        except OSError as exc:
            last_error = exc
            continue
        # imaplib logs every command line (the LOGIN line too) when debug is on; keep it off.
        client._imap.debug = 0
        return client
    assert last_error is not None
    raise last_error


def _is_imap_status(greeting: str) -> bool:
    return bool(re.match(r"\* (BYE|NO|BAD)\b", greeting.strip("b'\""), re.I))


def _login(client: IMAPClient, settings: ConnectionSettings) -> None:
    if settings.access_tokens is not None:
        _oauth_login(client, settings)
        return
    if (settings.username + settings.password).isascii():
        client.login(settings.username, settings.password)
        return
    # LOGIN takes ASCII only; AUTHENTICATE PLAIN carries UTF-8.
    if b"AUTH=PLAIN" not in client.capabilities():
        raise ImapConnectError(
            AUTH_FAILED,
            "The user name or password contains characters this server cannot accept.",
            "Use a password with plain ASCII characters, or an app password.",
        )
    client.plain_login(settings.username, settings.password)


def _oauth_login(client: IMAPClient, settings: ConnectionSettings) -> None:
    """SASL OAUTHBEARER (RFC 7628) when the server offers it, else XOAUTH2 (Google's and Microsoft's).

    A token that looked valid but is refused (revoked early, clocks apart) is refreshed once and tried again.
    """
    if oauth_mechanism([c.decode("ascii", "replace") for c in client.capabilities()], settings.host) == OAUTHBEARER:
        def authenticate(token: str) -> None:
            client.oauthbearer_login(settings.username, token)
    else:
        def authenticate(token: str) -> None:
            client.oauth2_login(settings.username, token)
    tokens = settings.access_tokens
    token = tokens.current()
    try:
        authenticate(token)
    except imap_exceptions.LoginError as exc:
        if tokens.fresh or isinstance(exc.__context__, _CONNECTION_LOST):
            raise
        authenticate(tokens.refresh())


OAUTHBEARER, XOAUTH2 = "OAUTHBEARER", "XOAUTH2"


def oauth_mechanism(capabilities: Iterable[str], host: str) -> str:
    """The SASL mechanism an OAuth 2.0 mailbox signs in with (the sync and the watcher alike): OAUTHBEARER
    (RFC 7628) when the server offers it, else XOAUTH2 (Google's and Microsoft's); neither is a plain refusal."""
    offered = {capability.upper() for capability in capabilities}
    if f"AUTH={OAUTHBEARER}" in offered:
        return OAUTHBEARER
    if f"AUTH={XOAUTH2}" in offered:
        return XOAUTH2
    raise ImapConnectError(
        OAUTH_NOT_OFFERED,
        f"The server {host} does not offer signing in with OAuth 2.0 (no XOAUTH2 or OAUTHBEARER).",
        "Check the IMAP server name and port, or connect this mailbox with a password instead.",
    )


def _without_secrets(exc: BaseException) -> BaseException | None:
    # A UnicodeEncodeError carries the whole string it failed on (the password): never chain it.
    if isinstance(exc, UnicodeError):
        return None
    return exc


# --------------------------------------------------------------------------- plain words


def provider_hint(host: str, kind: str) -> str:
    """Provider-specific advice for auth problems, by the IMAP host name."""
    host = (host or "").lower()
    if host.endswith(("gmail.com", "googlemail.com")):
        if kind == IMAP_DISABLED:
            return "Turn on IMAP in Gmail: Settings > See all settings > Forwarding and POP/IMAP > Enable IMAP."
        return ("Gmail needs an app password: in your Google Account open Security > 2-Step Verification > "
                "App passwords, create one and use it here instead of your normal password.")
    if any(part in host for part in ("outlook.", "office365.", "hotmail.", "live.com")):
        if kind == IMAP_DISABLED:
            return "Ask your Microsoft 365 administrator to enable IMAP for this mailbox."
        return ("Microsoft accounts with two-step verification need an app password "
                "(account.microsoft.com > Security > Advanced security options > App passwords).")
    if "yahoo." in host:
        return "Yahoo needs an app password: Account Info > Account Security > Generate app password."
    if host.endswith(("mail.me.com", "icloud.com")):
        return ("iCloud needs an app-specific password: "
                "appleid.apple.com > Sign-In and Security > App-Specific Passwords.")
    if kind == IMAP_DISABLED:
        return "Enable IMAP access in the mailbox's settings at your e-mail provider."
    if kind == APP_PASSWORD_REQUIRED:
        return "Create an app password in your e-mail provider's security settings and use it here."
    return ("Check the user name (often the full e-mail address) and the password. Providers with two-step "
            "verification usually need an app password.")


_APP_PASSWORD_SIGNS = ("application-specific password", "app password", "app-specific password",
                       "apppassword", "webalert", "web login required", "log in via your web browser",
                       "sign in via your web browser")
# The connection broke (as opposed to the server answering NO or BAD).
_CONNECTION_LOST = (imaplib.IMAP4.abort, OSError, EOFError)
_IMAP_DISABLED_SIGNS = ("not enabled for imap", "imap access is disabled", "imap is disabled",
                        "imap access disabled", "enable imap", "imap use", "authenticated but not connected",
                        "imap not enabled")


def _server_text(exc: BaseException, password: str) -> str:
    text = str(exc).strip()
    # imapclient shows the server's bytes as b'...'.
    if len(text) > 2 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        text = text[2:-1]
    if password:
        text = text.replace(password, "***")
    return text[:300]


def classify_error(exc: BaseException, settings: ConnectionSettings | None = None) -> ImapConnectError:
    """Turn any exception raised while talking to an IMAP server into an ImapConnectError."""
    if isinstance(exc, ImapConnectError):
        return exc
    if isinstance(exc, ResponseLimitExceeded):
        return _over_limit(exc, settings)
    host = settings.host if settings else "the server"
    port = settings.port if settings else 0
    password = settings.password if settings else ""
    where = f"{host}:{port}" if port else host

    if isinstance(exc, imap_exceptions.LoginError) and isinstance(exc.__context__, _CONNECTION_LOST):
        # imapclient turns every error during LOGIN into LoginError, a dropped connection too:
        # that says nothing about the password, so classify what really happened (transient).
        return classify_error(exc.__context__, settings)
    if isinstance(exc, imap_exceptions.LoginError):
        said = _server_text(exc, password)
        lowered = said.lower()
        if any(sign in lowered for sign in _APP_PASSWORD_SIGNS):
            return ImapConnectError(APP_PASSWORD_REQUIRED,
                                    "The provider does not accept the normal password for mail programs; "
                                    f"it requires an app password (server said: {said}).",
                                    provider_hint(host, APP_PASSWORD_REQUIRED))
        if any(sign in lowered for sign in _IMAP_DISABLED_SIGNS):
            return ImapConnectError(IMAP_DISABLED,
                                    f"IMAP access is turned off for this mailbox (server said: {said}).",
                                    provider_hint(host, IMAP_DISABLED))
        if settings is not None and settings.access_tokens is not None:
            return ImapConnectError(AUTH_FAILED,
                                    f"The server did not accept the sign-in of {settings.username} "
                                    f"(server said: {said}).",
                                    "Check that the account signed in is the mailbox's own (the user name), "
                                    "and that IMAP is enabled for it.")
        return ImapConnectError(AUTH_FAILED,
                                f"The server rejected the user name or password (server said: {said}).",
                                provider_hint(host, AUTH_FAILED))
    if isinstance(exc, UnicodeError):
        return ImapConnectError(AUTH_FAILED,
                                "The user name or password contains characters this server cannot accept.",
                                "Use a password with plain ASCII characters, or an app password.")
    if isinstance(exc, socket.gaierror):
        temporary = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
        return ImapConnectError(HOST_NOT_FOUND,
                                f"The server name {host} could not be found"
                                + (" (the name server did not answer)." if temporary else "."),
                                "Check the spelling of the IMAP server, e.g. imap.gmail.com or outlook.office365.com.",
                                permanent=not temporary)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted_certificate(exc, host)
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        # What OpenSSL says when the first bytes back are not TLS at all (an IMAP greeting, an HTTP page).
        not_tls = any(sign in str(reason).upper()
                      for sign in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG"))
        if not_tls and (settings is None or settings.security == "ssl"):
            return nothing_there(settings, NO_TLS)
        transient = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
        return ImapConnectError(TLS_ERROR, f"The secure connection to {where} failed ({reason}).",
                                "Check the port and the security setting; this may also be temporary.",
                                permanent=not transient)
    if isinstance(exc, imap_exceptions.CapabilityError) and "STARTTLS" in str(exc).upper():
        return ImapConnectError(STARTTLS_UNAVAILABLE,
                                f"The server {host} does not offer STARTTLS on port {port}.",
                                "Use SSL/TLS (usually port 993) instead.")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        seconds = settings.timeout if settings else 0
        waited = f" within {seconds:g} second{'' if seconds == 1 else 's'}" if seconds else " in time"
        return ImapConnectError(TIMEOUT,
                                f"{where} did not answer{waited}.",
                                "Check the server name and port; a firewall may block the port. "
                                "If the server is just slow, the sync retries automatically.")
    if isinstance(exc, ConnectionRefusedError):
        return nothing_there(settings, CONNECTION_REFUSED)
    if isinstance(exc, (imap_exceptions.IMAPClientAbortError, imaplib.IMAP4.abort, EOFError,
                        ConnectionError, BrokenPipeError)):
        return ImapConnectError(SERVER_ERROR,
                                f"The connection to {where} was lost ({_server_text(exc, password) or 'closed'}).",
                                "This is usually temporary; the sync retries automatically.")
    if isinstance(exc, OSError):
        unreachable = exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
        reason = "the network or host is unreachable" if unreachable else (exc.strerror or str(exc))
        return ImapConnectError(SERVER_ERROR, f"Could not talk to {where}: {reason}.",
                                "This is usually temporary; the sync retries automatically.")
    if isinstance(exc, (imap_exceptions.IMAPClientError, imaplib.IMAP4.error)):
        return ImapConnectError(SERVER_ERROR,
                                f"The mail server reported an error: {_server_text(exc, password)}.",
                                "If this persists, check the mailbox with the provider.")
    return ImapConnectError(SERVER_ERROR, f"Unexpected error while talking to {where}: {type(exc).__name__}.",
                            "If this persists, check the server logs.")


# OpenSSL's verify code for "the certificate is not valid for the host name it was reached by".
_HOSTNAME_MISMATCH = 62


def _untrusted_certificate(exc: ssl.SSLCertVerificationError, host: str) -> ImapConnectError:
    """The server speaks TLS, but its certificate is not one we may trust for ``host``."""
    reason = exc.verify_message or "certificate verification failed"
    if exc.verify_code == _HOSTNAME_MISMATCH or "hostname mismatch" in reason.lower():
        return ImapConnectError(
            CERTIFICATE_NAME_MISMATCH,
            f"The server's certificate is not made out to the name {host}, so the CRM cannot be sure it is "
            f"talking to the right server ({reason}).",
            "Enter the exact host name your provider gives for IMAP (the name its certificate is made out "
            "to), not an address or another name of the same server.",
        )
    return ImapConnectError(
        CERTIFICATE_UNTRUSTED,
        f"The certificate of {host} is not signed by a certificate authority the CRM trusts ({reason}).",
        "Check that the host name is exactly the one your provider gives for IMAP. If this is your own mail "
        "server with a certificate from your own certificate authority, enter in CA file "
        f"{CA_FILE_WHERE}: that authority's certificate.",
    )


def nothing_there(settings: ConnectionSettings | None, kind: str) -> ImapConnectError:
    """No IMAP server on that port: nothing listening, no TLS where TLS was chosen, or not IMAP at all.

    One message for all three, so the connection check tells nobody which ports of a host are closed,
    which speak TLS and which speak something else (it would be a port scanner otherwise). The kinds
    still differ for the sync: a refused connection or no IMAP greeting is retried later (the server may
    be restarting, the connection may have been cut), a port without TLS needs the settings changed.
    """
    where = f"{settings.host} port {settings.port}" if settings else "this port"
    security = "STARTTLS" if settings is not None and settings.security == "starttls" else "SSL/TLS"
    return ImapConnectError(
        kind,
        f"No IMAP server answered with {security} on {where}.",
        "Check the host name, the port and the security: SSL/TLS is usually port 993, STARTTLS port 143. "
        "If they are right, the server may be down for now (a sync retries automatically).",
    )


def _over_limit(exc: ResponseLimitExceeded, settings: ConnectionSettings | None) -> ImapConnectError:
    """A cap of response_limits.py held: the server sent too much, or too slowly. Never its bytes."""
    host = settings.host if settings else "The server"
    if exc.too_slow:
        return ImapConnectError(
            TOO_SLOW,
            f"{host} answered too slowly: {exc.reason}. The sync stopped; what it stored so far is kept.",
            "The next sync continues where this one stopped. If this repeats, the server is overloaded or "
            "misbehaving; an administrator can raise IMAP_COMMAND_SECONDS or IMAP_SYNC_SECONDS.",
        )
    return ImapConnectError(
        TOO_MUCH_DATA,
        f"The server sent more data than expected ({exc.reason}). The sync stopped; what it stored so far "
        "is kept.",
        "The next sync continues where this one stopped. If this repeats, the server is broken or hostile: "
        "check it with your provider. An administrator can raise IMAP_MAX_LITERAL_BYTES, IMAP_MAX_LINE_BYTES "
        "or IMAP_MAX_RESPONSE_BYTES.",
    )
