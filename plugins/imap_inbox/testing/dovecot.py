"""A throwaway, real Dovecot IMAP server for tests, benchmarks and demos.

Each ``DovecotServer`` owns a private folder holding its config, TLS material
(a test CA plus a server certificate for 127.0.0.1/localhost), a passwd-file
with its users, Maildir storage and logs. It listens on two free loopback ports:
``imaps_port`` (implicit TLS) and ``imap_port`` (STARTTLS; LOGIN is refused
until TLS is up).

    with DovecotServer() as srv:
        srv.add_user("alice@example.com", "secret")
        srv.append("alice@example.com", "INBOX", raw_message)
        with srv.client("alice@example.com") as imap:
            imap.select_folder("INBOX")

Requires Debian's ``dovecot-imapd`` (Dovecot 2.3). Works when run as root: mail
is stored as an unprivileged system user (``mail`` by default).
"""

from __future__ import annotations

import atexit
import calendar
import datetime as dt
import email.utils
import grp
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from imapclient import IMAPClient, imap_utf7

__all__ = ["DovecotServer", "DovecotError", "INSTALL_HINT"]

INSTALL_HINT = "apt-get install dovecot-imapd"

# Unix socket paths are limited to 108 bytes; Dovecot nests sockets two levels deep.
_MAX_BASE_DIR_LEN = 70
_USERNAME_RE = re.compile(r"^[a-z0-9._%+@=-]+$")
_DATE_RE = re.compile(rb"^Date:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
# The common RFC 5322 shape, parsed without email.utils for write_maildir speed.
_FAST_DATE_RE = re.compile(
    rb"(?:[A-Za-z]{3}, )?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$"
)
_MONTHS = {m: i for i, m in enumerate(
    (b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"), 1)}
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_FLAG_LETTERS = {b"\\Draft": "D", b"\\Flagged": "F", b"\\Answered": "R", b"\\Seen": "S", b"\\Deleted": "T"}

_running: weakref.WeakSet[DovecotServer] = weakref.WeakSet()


class DovecotError(RuntimeError):
    """Dovecot is missing, failed to start, or a doveadm command failed."""


def _stop_all_at_exit() -> None:
    for server in list(_running):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - best effort during interpreter shutdown
            pass


atexit.register(_stop_all_at_exit)


def _free_port(hosts: Sequence[str], exclude: Iterable[int] = ()) -> int:
    """A port currently free on every address in ``hosts``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        if port not in exclude and all(_port_is_free(h, port) for h in hosts[1:]):
            return port
    raise DovecotError(f"could not find a free port on {', '.join(hosts)}")


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _which(name: str) -> str | None:
    # Dovecot lives in /usr/sbin, which is not on PATH for every caller (e.g. CI shells).
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _check_traversable(directory: Path) -> None:
    # pytest's tmp_path lives under a 0700 folder: Dovecot's auth and mail processes
    # (non-root) could not reach the users file or Maildirs there.
    for d in (directory, *directory.parents):
        if not os.stat(d).st_mode & 0o001:
            raise DovecotError(
                f"{d} is not searchable by other users (needs o+x): Dovecot's unprivileged "
                f"processes must reach files below it. Use a base_dir under /tmp or /dev/shm."
            )


def _conf_quote(value: str) -> str:
    if any(c in value for c in '"\\\n\r'):
        raise ValueError(f"unsupported character in Dovecot config value: {value!r}")
    return f'"{value}"'


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-max_bytes:].decode("utf-8", "replace")


def _write_pem(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, ips: Sequence[str], names: Sequence[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in names]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _date_to_mtime(raw: bytes) -> float | None:
    """Epoch seconds of the Date header, or None if absent/unparseable/out of range."""
    header_end = raw.find(b"\r\n\r\n")
    if header_end == -1:
        header_end = raw.find(b"\n\n")
    if header_end == -1:
        header_end = len(raw)
    if raw.startswith(b"Date:"):
        pos = 5
    else:
        pos = raw.find(b"\nDate:", 0, header_end)
        if pos != -1:
            pos += 6
        else:
            m = _DATE_RE.search(raw, 0, header_end)
            if not m:
                return None
            pos = m.start(1)
    eol = raw.find(b"\n", pos)
    value = raw[pos:eol if eol != -1 else len(raw)].strip()
    try:
        f = _FAST_DATE_RE.match(value)
        month = _MONTHS.get(f.group(2).lower()) if f else None
        if f and month:
            offset = (int(f.group(8)) * 60 + int(f.group(9))) * 60
            ts = float(calendar.timegm((int(f.group(3)), month, int(f.group(1)), int(f.group(4)),
                                        int(f.group(5)), int(f.group(6)), 0, 0, 0)))
            ts += -offset if f.group(7) == b"+" else offset
        else:
            parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
            if parsed is None:
                return None
            ts = float(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError):
        return None
    # Out-of-range dates are deliberate in malformed corpora; keep the file's own mtime then.
    return ts if 0 < ts < 2**31 else None


class DovecotServer:
    """A private Dovecot 2.3 instance on loopback; see the module docstring.

    Folder operations (``create_folder``, ``delete_folder``, ``warm``...) use
    ``doveadm`` and need the server to be running; ``write_maildir`` does not.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        tls_only_host: str = "127.0.0.2",
        sent_folder: str = "Sent",
        sent_special_use: bool = True,
        mail_user: str | None = None,
        startup_timeout: float = 20.0,
        keep_files: bool = False,
        cert_names: Sequence[str] = ("localhost",),
        extra_config: str = "",
        oauth2_introspection_url: str | None = None,
        oauth2_ca_file: str | None = None,
    ) -> None:
        """Prepare (but do not start) a server in a new folder under ``base_dir``.

        ``sent_folder`` names the auto-created Sent mailbox; with
        ``sent_special_use=False`` it gets no ``\\Sent`` flag, so clients must
        find it by name. ``keep_files`` leaves the folder behind on ``close()``.
        ``cert_names`` are the host names in the server's certificate (its
        loopback addresses are always in it). ``extra_config`` is appended to
        dovecot.conf (e.g. a capability list without IDLE, or higher limits).

        With ``oauth2_introspection_url`` (``https://client:secret@host/introspect``) the server also
        takes SASL XOAUTH2 and OAUTHBEARER: Dovecot's oauth2 passdb asks that endpoint (RFC 7662)
        whether each bearer token is active and whose it is (``sub`` must be the user name), trusting
        ``oauth2_ca_file`` for its certificate. The user must still be added (``add_user``) for a home.

        The same ports also listen on ``tls_only_host``: Dovecot deems a client
        "secured" when its IP equals the server's IP, which is always true for
        127.0.0.1 -> 127.0.0.1, and then allows plaintext LOGIN despite
        ``disable_plaintext_auth``. Connecting to 127.0.0.2 arrives from
        127.0.0.1, so there plaintext LOGIN is refused as on a real server.
        """
        self.host = host
        self.tls_only_host = tls_only_host
        self.cert_names = tuple(cert_names)
        self._dovecot = _which("dovecot")
        self._doveadm = _which("doveadm")
        if not self._dovecot or not self._doveadm:
            raise DovecotError(
                f"Dovecot is not installed (no 'dovecot'/'doveadm' binary found); "
                f"install it with: {INSTALL_HINT}"
            )
        _conf_quote(sent_folder)
        self.sent_folder = sent_folder
        self.sent_special_use = sent_special_use
        self.startup_timeout = startup_timeout
        self.keep_files = keep_files
        self.extra_config = extra_config
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_ca_file = oauth2_ca_file

        pw = self._resolve_mail_user(mail_user)
        self.mail_user = pw.pw_name
        self.mail_uid = pw.pw_uid
        self.mail_gid = pw.pw_gid
        self.mail_group = grp.getgrgid(pw.pw_gid).gr_name

        if base_dir is not None:
            Path(base_dir).mkdir(parents=True, exist_ok=True)
        _check_traversable(Path(base_dir or tempfile.gettempdir()).resolve())
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=base_dir)).resolve()
        # Dovecot's auth process runs unprivileged and must read users + certs.
        self.root.chmod(0o755)
        run_dir = self.root / "run"
        if len(str(run_dir)) > _MAX_BASE_DIR_LEN:
            run_dir = Path(tempfile.mkdtemp(prefix="dovecot-run-"))
            run_dir.chmod(0o755)
        self.base_dir = run_dir
        self.state_dir = self.root / "state"
        self.home_root = self.root / "home"
        self.ssl_dir = self.root / "ssl"
        self.conf_path = self.root / "dovecot.conf"
        self.users_path = self.root / "users"
        self.log_path = self.root / "dovecot.log"
        self.stderr_path = self.root / "dovecot.stderr"
        for d in (self.state_dir, self.home_root, self.ssl_dir):
            d.mkdir(mode=0o755)
        self.users_path.write_text("")
        self.users_path.chmod(0o644)
        # One passwd-file per user: Dovecot re-reads a passwd-file at most once per second, so a
        # user added to one shared file right after another login would be "unknown" until then.
        self.users_dir = self.root / "users.d"
        self.users_dir.mkdir(mode=0o755)

        self._users: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._imaps_port: int | None = None
        self._imap_port: int | None = None
        self._file_seq = 0
        self._make_tls()

    # ------------------------------------------------------------------ properties

    @property
    def imaps_port(self) -> int:
        """Implicit-TLS port (assigned on first ``start()``)."""
        if self._imaps_port is None:
            raise DovecotError("server has not been started yet")
        return self._imaps_port

    @property
    def imap_port(self) -> int:
        """Plain port offering STARTTLS (assigned on first ``start()``)."""
        if self._imap_port is None:
            raise DovecotError("server has not been started yet")
        return self._imap_port

    @property
    def ca_file(self) -> str:
        """PEM file of the CA that signed the server certificate."""
        return str(self.ssl_dir / "ca.pem")

    @property
    def wrong_ca_file(self) -> str:
        """PEM file of an unrelated CA, for certificate-verification failure tests."""
        return str(self.ssl_dir / "wrong-ca.pem")

    @property
    def cert_file(self) -> str:
        return str(self.ssl_dir / "server.pem")

    @property
    def key_file(self) -> str:
        return str(self.ssl_dir / "server.key")

    @property
    def users(self) -> dict[str, str]:
        """Copy of username -> password for every added user."""
        return dict(self._users)

    @property
    def addresses(self) -> list[str]:
        """Every address Dovecot listens on (``host`` first)."""
        extra = [self.tls_only_host] if self.tls_only_host and self.tls_only_host != self.host else []
        return [self.host, *extra]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> DovecotServer:
        """Start Dovecot; the first start picks free ports, later starts reuse them."""
        if self.running:
            return self
        if self._imaps_port is None:
            last_error: DovecotError | None = None
            for _ in range(3):
                self._imaps_port = _free_port(self.addresses)
                self._imap_port = _free_port(self.addresses, exclude=[self._imaps_port])
                try:
                    self._start_once()
                    return self
                except DovecotError as e:
                    # Another process may grab a port between picking and binding it.
                    last_error = e
                    if "in use" not in str(e):
                        break
            self._imaps_port = self._imap_port = None
            assert last_error is not None
            raise last_error
        self._start_once()
        return self

    def stop(self, grace: float = 1.5, timeout: float = 10.0) -> None:
        """Stop the master and every child process; data and ports are kept.

        ``grace`` seconds for a clean shutdown, then everything is killed;
        ``grace=0`` kills at once, like a crash (Dovecot's indexes survive that).
        """
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        _running.discard(self)
        # Dovecot runs in its own session, so its children share the master's process
        # group. The master shuts down cleanly on TERM in about a second, but can hang
        # for 5 s (a login process waiting on the stats socket) or more if its children
        # got TERM too; so TERM the master alone, then KILL the group after a grace period.
        # The master is not reaped until the end, so its pid (= the group id) cannot
        # be reused by an unrelated process while we signal the group.
        if grace > 0:
            proc.send_signal(signal.SIGTERM)
            self._wait_exit(proc.pid, grace)
        self._signal_group(proc.pid, signal.SIGKILL)
        self._wait_exit(proc.pid, timeout)
        proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_port_is_free(h, p) for h in self.addresses for p in self._ports()):
                break
            time.sleep(0.05)

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> bool:
        """Wait for ``pid`` to exit without reaping it; True if it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                    return True
            except ChildProcessError:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def restart(self) -> DovecotServer:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the server folder (unless ``keep_files``)."""
        self.stop()
        if not self.keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
            if not self.base_dir.is_relative_to(self.root):
                shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ users & paths

    def add_user(self, username: str, password: str) -> None:
        """Add (or re-password) a user; takes effect immediately, also while running."""
        user = self._norm(username)
        if not password or any(c in password for c in ":\r\n"):
            raise ValueError("password must be non-empty and contain no ':' or newlines")
        home = self.home(user)
        for d in (home, home / "Maildir", home / "Maildir" / "cur",
                  home / "Maildir" / "new", home / "Maildir" / "tmp"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, self.mail_uid, self.mail_gid)
        self._users[user] = password
        lines = [
            f"{u}:{{PLAIN}}{p}:{self.mail_uid}:{self.mail_gid}::{self.home(u)}::\n"
            for u, p in self._users.items()
        ]
        tmp = self.users_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        # Atomic replace: the auth process re-reads the file whenever it changes.
        tmp.replace(self.users_path)
        path = self.users_dir / user
        old_mtime = int(path.stat().st_mtime) if path.exists() else None
        own = self.users_dir / f".{user}.tmp"
        own.write_text(f"{user}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{self.home(user)}::\n")
        own.chmod(0o644)
        if old_mtime is not None:
            # Dovecot reloads when mtime or size differ; a same-length password needs another mtime.
            stamp = max(int(time.time()), old_mtime + 1)
            os.utime(own, (stamp, stamp))
        own.replace(path)
        if old_mtime is not None:
            # ... and it looks at the file at most once per second.
            time.sleep(1.05 - time.time() % 1)

    def home(self, username: str) -> Path:
        return self.home_root / self._norm(username)

    def maildir(self, username: str, folder: str | None = None) -> Path:
        """The user's Maildir root, or the directory of ``folder`` inside it.

        Layout is ``LAYOUT=fs``: INBOX is the root itself, "Sent Items" is
        ``Maildir/Sent Items``, "A/B" is ``Maildir/A/B``; non-ASCII names are
        stored in IMAP modified UTF-7.
        """
        root = self.home(username) / "Maildir"
        if folder is None or folder.upper() == "INBOX":
            return root
        encoded = imap_utf7.encode(folder)
        name = encoded.decode("ascii") if isinstance(encoded, bytes) else encoded
        return root / name

    # ------------------------------------------------------------------ mail operations

    def client(
        self,
        username: str,
        password: str | None = None,
        *,
        ssl: bool = True,
        starttls: bool = True,
        timeout: float = 30.0,
        ca_file: str | None = None,
        host: str | None = None,
    ) -> IMAPClient:
        """A logged-in IMAPClient; TLS is verified against ``ca_file`` (default: ours).

        ``ssl=True`` uses the implicit-TLS port; ``ssl=False`` the plain port
        with STARTTLS (or, with ``starttls=False``, no TLS at all, which the
        server refuses to log in when ``host`` is ``tls_only_host``).
        """
        host = host or self.host
        user = self._norm(username)
        if password is None:
            password = self._users[user]
        ctx = self.ssl_context(ca_file)
        if ssl:
            imap = IMAPClient(host, port=self.imaps_port, ssl=True,
                              ssl_context=ctx, timeout=timeout)
        else:
            imap = IMAPClient(host, port=self.imap_port, ssl=False, timeout=timeout)
            if starttls:
                imap.starttls(ctx)
        try:
            imap.login(user, password)
        except Exception:
            imap.shutdown()
            raise
        return imap

    def ssl_context(self, ca_file: str | None = None) -> ssl.SSLContext:
        """A verifying client context trusting only ``ca_file`` (default: our CA)."""
        return ssl.create_default_context(cafile=ca_file or self.ca_file)

    def append(
        self,
        username: str,
        folder: str,
        raw: bytes,
        flags: Sequence[str | bytes] = (),
        internaldate: dt.datetime | None = None,
    ) -> int | None:
        """APPEND one message over IMAP; returns its UID (from APPENDUID) if given.

        A missing folder is created first (the server answers TRYCREATE).
        """
        with self.client(username) as imap:
            try:
                resp = imap.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
            except IMAPClient.Error as e:
                if "TRYCREATE" not in str(e):
                    raise
                imap.create_folder(folder)
                imap.subscribe_folder(folder)
                resp = imap.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
        m = _APPENDUID_RE.search(resp if isinstance(resp, bytes) else str(resp).encode())
        return int(m.group(2)) if m else None

    def expunge(self, username: str, folder: str, uids: Iterable[int]) -> None:
        """Delete and UID EXPUNGE exactly ``uids`` in ``folder`` over IMAP."""
        uid_list = [int(u) for u in uids]
        if not uid_list:
            return
        with self.client(username) as imap:
            imap.select_folder(folder)
            imap.delete_messages(uid_list)
            imap.expunge(uid_list)

    def write_maildir(
        self,
        username: str,
        folder: str,
        messages: Iterable[bytes],
        *,
        flags: Sequence[str | bytes] = (),
        mtime_from_date: bool = True,
    ) -> int:
        """Write messages straight into the folder's Maildir ``cur/``; returns the count.

        Far faster than APPEND (100k messages take seconds). Files sort by name
        in write order, so Dovecot assigns UIDs in that order. The file mtime,
        which Dovecot reports as INTERNALDATE, follows the Date header when
        ``mtime_from_date``. The folder is created if missing (this part needs
        the server running unless the folder exists already).
        """
        user = self._norm(username)
        if user not in self._users:
            raise KeyError(f"unknown user {username!r}; call add_user() first")
        box = self.maildir(user, folder)
        if not (box / "cur").is_dir():
            if self.running:
                self.create_folder(user, folder)
            else:
                self._mkdir_owned(box, box / "cur", box / "new", box / "tmp")
        try:
            letters = "".join(sorted(_FLAG_LETTERS[f if isinstance(f, bytes) else f.encode()] for f in flags))
        except KeyError as e:
            raise ValueError(f"write_maildir supports only system flags {list(_FLAG_LETTERS)}, not {e}") from None
        stamp = time.time_ns() // 1000
        # Fixed-width fields keep lexical order == write order (UID order).
        prefix = f"{stamp // 1_000_000}.M{stamp % 1_000_000:06d}"
        suffix = f"P{os.getpid()}.harness"
        uid, gid = self.mail_uid, self.mail_gid
        count = 0
        o_flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        # Opening relative to a directory fd skips path resolution per file.
        dir_fd = os.open(box / "cur", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for raw in messages:
                self._file_seq += 1
                name = f"{prefix}Q{self._file_seq:010d}{suffix},S={len(raw)}:2,{letters}"
                fd = os.open(name, o_flags, 0o600, dir_fd=dir_fd)
                try:
                    os.write(fd, raw)
                    os.fchown(fd, uid, gid)
                    if mtime_from_date:
                        ts = _date_to_mtime(raw)
                        if ts is not None:
                            os.utime(fd, (ts, ts))
                finally:
                    os.close(fd)
                count += 1
        finally:
            os.close(dir_fd)
        return count

    def create_folder(self, username: str, folder: str) -> None:
        """Create (and subscribe) a mailbox via doveadm; no error if it exists."""
        out = self._doveadm_run("mailbox", "create", "-s", "-u", self._norm(username), folder,
                                check=False)
        if out.returncode != 0 and "exists" not in (out.stderr + out.stdout).lower():
            raise DovecotError(f"doveadm mailbox create {folder!r} failed: {out.stderr.strip()}")

    def delete_folder(self, username: str, folder: str) -> None:
        """Delete a mailbox and its messages via doveadm."""
        self.doveadm("mailbox", "delete", "-s", "-u", self._norm(username), folder)

    def recreate_folder(self, username: str, folder: str) -> int:
        """Delete and create ``folder`` again, forcing a new UIDVALIDITY; returns it."""
        before = self.uidvalidity(username, folder)
        self.delete_folder(username, folder)
        self.create_folder(username, folder)
        after = self.uidvalidity(username, folder)
        if after == before:
            raise DovecotError(f"UIDVALIDITY of {folder!r} did not change ({after})")
        return after

    recreate = recreate_folder

    def uidvalidity(self, username: str, folder: str) -> int:
        out = self.doveadm("mailbox", "status", "-u", self._norm(username), "uidvalidity", folder)
        return int(out.strip().split("=", 1)[1])

    def warm(self, username: str) -> None:
        """Index every folder of the user once so the first client SELECT is fast."""
        self.doveadm("index", "-u", self._norm(username), "*")

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <our config> ARGS``; returns stdout, raises on failure."""
        out = self._doveadm_run(*args, check=False)
        if out.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed (exit {out.returncode}): "
                f"{out.stderr.strip()} (log: {self.log_path})"
            )
        return out.stdout

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _norm(username: str) -> str:
        # Dovecot's default auth_username_format (%Lu) lowercases before lookup.
        user = username.strip().lower()
        if not _USERNAME_RE.match(user):
            raise ValueError(f"unsupported username {username!r}")
        return user

    @staticmethod
    def _resolve_mail_user(name: str | None) -> pwd.struct_passwd:
        candidates = [name] if name else ["mail", "nobody"]
        for cand in candidates:
            try:
                pw = pwd.getpwnam(cand)
            except KeyError:
                continue
            if pw.pw_uid == 0:
                raise DovecotError("Dovecot refuses to store mail as uid 0; pick another mail_user")
            return pw
        raise DovecotError(f"no usable mail user among {candidates}")

    def _mkdir_owned(self, *dirs: Path) -> None:
        for d in dirs:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(d, self.mail_uid, self.mail_gid)

    def _ports(self) -> list[int]:
        return [p for p in (self._imaps_port, self._imap_port) if p is not None]

    def _make_tls(self) -> None:
        ca_key, ca_cert = _make_ca("imap_inbox test CA")
        key, cert = _make_server_cert(ca_key, ca_cert, ["127.0.0.1", "::1", *self.addresses], self.cert_names)
        _, wrong_cert = _make_ca("imap_inbox unrelated CA")
        _write_pem(Path(self.ca_file), _cert_pem(ca_cert))
        _write_pem(Path(self.wrong_ca_file), _cert_pem(wrong_cert))
        # Like a real server, send only the leaf: clients must trust the CA themselves.
        _write_pem(Path(self.cert_file), _cert_pem(cert))
        # Dovecot reads the key as root through the config process, so 0600 is fine.
        _write_pem(Path(self.key_file), _key_pem(key), 0o600)

    def _mailbox_block(self, name: str, special_use: str | None) -> str:
        lines = [f"  mailbox {_conf_quote(name)} {{", "    auto = subscribe"]
        if special_use:
            lines.append(f"    special_use = {special_use}")
        lines.append("  }")
        return "\n".join(lines)

    def _write_config(self) -> None:
        boxes = [self._mailbox_block(self.sent_folder,
                                     "\\Sent" if self.sent_special_use else None)]
        for name, flag in (("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk")):
            if name != self.sent_folder:
                boxes.append(self._mailbox_block(name, flag))
        mailboxes = "\n".join(boxes)
        listen = ", ".join(self.addresses)
        mechanisms, oauth2_passdb = "plain login", ""
        if self.oauth2_introspection_url:
            mechanisms = "plain login xoauth2 oauthbearer"
            oauth2_passdb = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self._write_oauth2_config()}
}}
"""
        conf = f"""\
# Generated by plugins/imap_inbox/testing/dovecot.py - do not edit.
instance_name = imap-test-{self.root.name}
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
protocols = imap
listen = {listen}
shutdown_clients = yes
verbose_proctitle = no
# Tests of wrong passwords should not wait the default 2 s per attempt.
auth_failure_delay = 0
default_vsz_limit = 1G
login_greeting = Dovecot test server ready.

ssl = required
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = {mechanisms}
auth_verbose = yes

{oauth2_passdb}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%Lu {self.users_dir}/%Lu
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {self.users_dir}/%Lu
}}

mail_location = maildir:~/Maildir:LAYOUT=fs
# IDLE's new-mail check when inotify is out of instances (128 per user by default: other Dovecots of the
# machine, e.g. a benchmark's thousand IDLE connections, take them): every second, not Dovecot's 30.
mailbox_idle_check_interval = 1 secs
mail_uid = {self.mail_uid}
mail_gid = {self.mail_gid}
first_valid_uid = {min(self.mail_uid, 500)}
first_valid_gid = {min(self.mail_gid, 1)}
mail_fsync = never

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}

service imap-login {{
  inet_listener imap {{
    address = {listen}
    port = {self._imap_port}
  }}
  inet_listener imaps {{
    address = {listen}
    port = {self._imaps_port}
    ssl = yes
  }}
}}

# No auth penalty: after a failed login Dovecot otherwise delays every later
# login from the same IP by 2-15 s, which makes wrong-password tests poison
# the rest of a suite. Without this socket the auth process disables it.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

protocol imap {{
  mail_max_userip_connections = 1000
  imap_idle_notify_interval = 2 mins
}}
{self.extra_config}
"""
        self.conf_path.write_text(conf)
        self.conf_path.chmod(0o644)

    def _write_oauth2_config(self) -> Path:
        path = self.root / "dovecot-oauth2.conf.ext"
        lines = [
            "introspection_mode = post",
            f"introspection_url = {self.oauth2_introspection_url}",
            "username_attribute = sub",
            "active_attribute = active",
            "active_value = true",
        ]
        if self.oauth2_ca_file:
            lines.append(f"tls_ca_cert_file = {self.oauth2_ca_file}")
        path.write_text("\n".join(lines) + "\n")
        # The auth process runs unprivileged; the file holds the introspection client's secret.
        path.chmod(0o644)
        return path

    def _start_once(self) -> None:
        for host in self.addresses:
            for port in self._ports():
                if not _port_is_free(host, port):
                    raise DovecotError(f"port {host}:{port} is in use; cannot start Dovecot")
        self._write_config()
        stderr = open(self.stderr_path, "ab")
        try:
            proc = subprocess.Popen(
                [str(self._dovecot), "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Own session: a Ctrl-C in the test runner must not reach Dovecot half-way.
                start_new_session=True,
                close_fds=True,
            )
        finally:
            stderr.close()
        self._proc = proc
        _running.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise self._startup_error(f"dovecot exited with code {self._proc.returncode}")
            if self._greets(self.imap_port) and self._accepts(self.imaps_port):
                return
            if time.monotonic() > deadline:
                raise self._startup_error(f"no IMAP greeting within {self.startup_timeout}s")
            time.sleep(0.05)

    def _greets(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2) as s:
                return s.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2):
                return True
        except OSError:
            return False

    def _startup_error(self, reason: str) -> DovecotError:
        details = (_tail(self.stderr_path) + "\n" + _tail(self.log_path)).strip()
        if "Address already in use" in details:
            reason += " (address in use)"
        return DovecotError(
            f"Dovecot failed to start: {reason}. Config: {self.conf_path}; "
            f"log: {self.log_path}; stderr: {self.stderr_path}\n{details}"
        )

    def _doveadm_run(self, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
        if not self.running:
            raise DovecotError(f"server is not running; start() it before doveadm {args[0]}")
        return subprocess.run(
            [str(self._doveadm), "-c", str(self.conf_path), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )
