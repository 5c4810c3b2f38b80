"""A small IMAP server on loopback that answers the way Cyrus IMAP 3.6 does where Dovecot cannot be made to.

Only for what no Dovecot setting reproduces: Cyrus advertises PREVIEW and
answers ``PREVIEW NIL`` for every message, and it lists FETCH items in its own
order (FLAGS before UID). Everything else the sync relies on (TLS with the
test CA's certificate, LOGIN, LIST, STATUS, EXAMINE, UID SEARCH, UID FETCH with
BODY.PEEK sections and partials) is answered as a real server would, from real
MIME messages, and every command received is recorded so a test can count
round trips.

    with CyrusLikeServer(dovecot.cert_file, dovecot.key_file, {"INBOX": [raw1, raw2]}) as server:
        ...connect to 127.0.0.1:server.port with dovecot.ca_file...
        server.commands   # ["CAPABILITY", "LOGIN", ..., "UID FETCH 2:1 (...)"]
"""
from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterable

USERNAME = "cyrus@team.example"
PASSWORD = "cyrus-secret"
UIDVALIDITY = 1700000000
INTERNALDATE = "01-Feb-2024 10:00:00 +0000"
CAPABILITIES = "IMAP4rev1 LITERAL+ ID ENABLE PREVIEW SPECIAL-USE UIDPLUS"

_HEADER_FIELDS_RE = re.compile(r"BODY\.PEEK\[HEADER\.FIELDS \(([^)]*)\)\]", re.IGNORECASE)
_TEXT_RE = re.compile(r"BODY\.PEEK\[TEXT\](?:<(\d+)\.(\d+)>)?", re.IGNORECASE)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    return (head + sep, body) if sep else (raw, b"")


def _header_fields(head: bytes, names: Iterable[str]) -> bytes:
    wanted = {n.lower() for n in names}
    kept, keep = [], False
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower() in wanted
        if keep:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _uid_set(text: str, uids: list[int]) -> list[int]:
    top = max(uids, default=0)
    chosen = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        low_n = top if low == "*" else int(low)
        high_n = low_n if not high else (top if high == "*" else int(high))
        low_n, high_n = min(low_n, high_n), max(low_n, high_n)
        chosen.update(uid for uid in uids if low_n <= uid <= high_n)
    return sorted(chosen)


class CyrusLikeServer:
    """Serves ``folders`` ({name: [raw message, ...]}, UIDs 1, 2, ...) over implicit TLS on a free loopback port."""

    def __init__(self, cert_file: str, key_file: str, folders: dict[str, list[bytes]]):
        self.folders = {name: dict(enumerate(messages, start=1)) for name, messages in folders.items()}
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.host = "127.0.0.1"
        self.commands: list[str] = []
        self._threads: list[threading.Thread] = []
        self._closed = False

    def __enter__(self) -> CyrusLikeServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        self.listener.close()

    def fetch_commands(self) -> list[str]:
        return [c for c in self.commands if c.upper().startswith("UID FETCH")]

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        try:
            with self.context.wrap_socket(sock, server_side=True) as tls:
                stream = tls.makefile("rwb")
                stream.write(f"* OK [CAPABILITY {CAPABILITIES}] cyrus-like ready\r\n".encode())
                stream.flush()
                selected = None
                while True:
                    line = stream.readline()
                    if not line:
                        return
                    tag, _, rest = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
                    self.commands.append(rest if not rest.upper().startswith("LOGIN") else "LOGIN")
                    selected = self._answer(stream, tag, rest, selected)
                    stream.flush()
                    if selected == "LOGOUT":
                        return
        except (OSError, ssl.SSLError):
            return

    def _answer(self, out, tag: str, command: str, selected: str | None) -> str | None:
        verb = command.split(" ", 1)[0].upper()
        args = command[len(verb) + 1:]
        if verb == "CAPABILITY":
            out.write(f"* CAPABILITY {CAPABILITIES}\r\n{tag} OK done\r\n".encode())
        elif verb == "LOGIN":
            if [token.strip('"') for token in args.split(" ")] == [USERNAME, PASSWORD]:
                out.write(f"{tag} OK [CAPABILITY {CAPABILITIES}] logged in\r\n".encode())
            else:
                out.write(f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials\r\n".encode())
        elif verb in ("ID", "NOOP", "ENABLE"):
            out.write(f"{tag} OK done\r\n".encode())
        elif verb == "LIST":
            for name in self.folders:
                flags = "\\HasNoChildren" + (" \\Sent" if name == "Sent" else "")
                out.write(f'* LIST ({flags}) "/" {_quote(name)}\r\n'.encode())
            out.write(f"{tag} OK done\r\n".encode())
        elif verb == "STATUS":
            name = args.split(" ", 1)[0].strip('"')
            messages = self.folders.get(name)
            if messages is None:
                out.write(f"{tag} NO Mailbox does not exist\r\n".encode())
            else:
                out.write(f"* STATUS {_quote(name)} (MESSAGES {len(messages)} UIDNEXT {len(messages) + 1} "
                          f"UIDVALIDITY {UIDVALIDITY})\r\n{tag} OK done\r\n".encode())
        elif verb in ("EXAMINE", "SELECT"):
            name = args.strip().strip('"')
            messages = self.folders.get(name)
            if messages is None:
                out.write(f"{tag} NO Mailbox does not exist\r\n".encode())
                return selected
            out.write(f"* {len(messages)} EXISTS\r\n* OK [UIDVALIDITY {UIDVALIDITY}] Ok\r\n"
                      f"* OK [UIDNEXT {len(messages) + 1}] Ok\r\n{tag} OK [READ-ONLY] done\r\n".encode())
            return name
        elif verb == "UID" and selected:
            self._uid(out, tag, args, selected)
        elif verb == "LOGOUT":
            out.write(f"* BYE bye\r\n{tag} OK done\r\n".encode())
            return "LOGOUT"
        else:
            out.write(f"{tag} BAD unknown command\r\n".encode())
        return selected

    def _uid(self, out, tag: str, args: str, selected: str) -> None:
        messages = self.folders[selected]
        sub, _, rest = args.partition(" ")
        if sub.upper() == "SEARCH":
            criteria = rest.strip().upper()
            uids = sorted(messages)
            if criteria.startswith("UID "):
                uids = _uid_set(criteria[4:], uids)
            out.write(("* SEARCH" + "".join(f" {u}" for u in uids) + f"\r\n{tag} OK done\r\n").encode())
            return
        if sub.upper() != "FETCH":
            out.write(f"{tag} BAD unknown UID command\r\n".encode())
            return
        set_text, _, items = rest.partition(" ")
        upper = items.upper()
        for seq, uid in enumerate(sorted(messages), start=1):
            if uid not in _uid_set(set_text, sorted(messages)):
                continue
            raw = messages[uid]
            head, body = _split(raw)
            # Cyrus's own order: FLAGS first, then UID, whatever the order asked.
            parts: list[bytes] = []
            if "FLAGS" in upper:
                parts.append(b"FLAGS (\\Seen)")
            parts.append(f"UID {uid}".encode())
            if "INTERNALDATE" in upper:
                parts.append(f'INTERNALDATE "{INTERNALDATE}"'.encode())
            if "RFC822.SIZE" in upper:
                parts.append(f"RFC822.SIZE {len(raw)}".encode())
            if "PREVIEW" in upper:
                parts.append(b"PREVIEW NIL")
            match = _HEADER_FIELDS_RE.search(items)
            if match:
                fields = _header_fields(head, match.group(1).split())
                parts.append(f"BODY[HEADER.FIELDS ({match.group(1).upper()})] {{{len(fields)}}}\r\n".encode()
                             + fields)
            match = _TEXT_RE.search(items)
            if match:
                start = int(match.group(1) or 0)
                data = body[start:start + int(match.group(2))] if match.group(2) else body
                origin = f"<{start}>" if match.group(1) else ""
                parts.append(f"BODY[TEXT]{origin} {{{len(data)}}}\r\n".encode() + data)
            out.write(f"* {seq} FETCH (".encode() + b" ".join(parts) + b")\r\n")
        out.write(f"{tag} OK Completed\r\n".encode())
