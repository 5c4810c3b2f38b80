"""Realistic and deliberately broken RFC 5322 messages, as bytes.

* ``make_message`` builds one well-formed message with the ``email`` package.
* ``generate_mailbox`` streams a deterministic, realistic INBOX + Sent mix
  (threads, mailing lists, no-reply senders, auto replies, several charsets)
  fast enough for 100k+ messages: headers are RFC 2047-encoded once into
  pools and messages are assembled from f-strings.
* ``malformed_corpus`` returns named messages that break parsers.

All domains are reserved example/test names and all IPs documentation ranges.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import email.utils
import functools
import itertools
import quopri
import random
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from typing import TypeVar

__all__ = ["make_message", "generate_mailbox", "malformed_corpus", "encode_words"]

CRLF = "\r\n"
Address = str | tuple[str, str]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_Q_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/")


# --------------------------------------------------------------------------- make_message


def _format_address(addr: Address, charset: str) -> str:
    if isinstance(addr, tuple):
        name, mail = addr
    else:
        name, mail = email.utils.parseaddr(addr) if "<" in addr else ("", addr)
    if not name:
        return mail
    if name.isascii():
        return email.utils.formataddr((name, mail))
    encoded = Header(name, charset).encode(linesep=CRLF)
    return f"{encoded} <{mail}>"


def _format_addresses(addrs: Address | Sequence[Address], charset: str) -> str:
    if isinstance(addrs, (str, tuple)):
        addrs = [addrs]
    return ("," + CRLF + " ").join(_format_address(a, charset) for a in addrs)


def _header_text(value: str, charset: str) -> str:
    if value.isascii():
        return value
    return Header(value, charset).encode(linesep=CRLF)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", CRLF)


def make_message(
    from_: Address,
    to: Address | Sequence[Address],
    subject: str,
    date: dt.datetime | str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | Sequence[str] | None = None,
    cc: Address | Sequence[Address] | None = None,
    body: str = "Hello,\n\nthis is a test message.\n\nRegards\n",
    headers: Mapping[str, str] | None = None,
    raw_headers: Sequence[str | bytes] | None = None,
    charset: str = "utf-8",
) -> bytes:
    """One RFC 5322 message with CRLF line ends.

    Non-ASCII subjects, display names and ``headers`` values are RFC 2047
    encoded in ``charset``; a non-ASCII body is quoted-printable in ``charset``.
    ``date`` defaults to now, ``message_id`` to a fresh one on the sender's
    domain. ``raw_headers`` are appended verbatim (str is UTF-8 encoded), e.g.
    to inject 8-bit or malformed header lines.
    """
    sender = _format_address(from_, charset)
    if date is None:
        date_value = email.utils.format_datetime(dt.datetime.now(dt.UTC).astimezone())
    elif isinstance(date, dt.datetime):
        date_value = email.utils.format_datetime(
            date if date.tzinfo else date.replace(tzinfo=dt.UTC)
        )
    else:
        date_value = date
    if message_id is None:
        mail = from_[1] if isinstance(from_, tuple) else email.utils.parseaddr(from_)[1]
        message_id = email.utils.make_msgid(domain=mail.rpartition("@")[2] or "example.com")
    lines = [
        f"From: {sender}",
        f"To: {_format_addresses(to, charset)}",
    ]
    if cc:
        lines.append(f"Cc: {_format_addresses(cc, charset)}")
    lines += [
        f"Subject: {_header_text(subject, charset)}",
        f"Date: {date_value}",
        f"Message-ID: {message_id}",
    ]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        refs = [references] if isinstance(references, str) else list(references)
        lines.append("References: " + (CRLF + " ").join(refs))
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {_header_text(value, charset)}")
    lines.append("MIME-Version: 1.0")
    body_text = _crlf(body)
    if body_text.isascii():
        lines += ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
        body_bytes = body_text.encode("ascii")
    else:
        lines += [
            f"Content-Type: text/plain; charset={charset}",
            "Content-Transfer-Encoding: quoted-printable",
        ]
        body_bytes = _qp(body.encode(charset))
    head = (CRLF.join(lines) + CRLF).encode("ascii")
    for raw in raw_headers or ():
        line = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        head += line.rstrip(b"\r\n") + b"\r\n"
    return head + b"\r\n" + body_bytes


def _qp(data: bytes) -> bytes:
    encoded = quopri.encodestring(data.replace(b"\r\n", b"\n"))
    return encoded.replace(b"\n", b"\r\n")


# --------------------------------------------------------------------------- encoded words


@functools.lru_cache(maxsize=8192)
def encode_words(text: str, charset: str = "utf-8", mode: str = "B") -> str:
    """RFC 2047-encode ``text`` as folded encoded words (``mode`` "B" or "Q").

    Unlike ``email.header``, this keeps the requested charset (the stdlib
    re-labels shift_jis as iso-2022-jp) and never splits a character.
    """
    if text.isascii() and "=?" not in text:
        return text
    prefix, suffix = f"=?{charset}?{mode}?", "?="
    budget = 75 - len(prefix) - len(suffix)
    words: list[str] = []
    chunk = ""
    for ch in text:
        trial = chunk + ch
        if chunk and len(_ew_payload(trial.encode(charset), mode)) > budget:
            words.append(prefix + _ew_payload(chunk.encode(charset), mode) + suffix)
            chunk = ch
        else:
            chunk = trial
    if chunk:
        words.append(prefix + _ew_payload(chunk.encode(charset), mode) + suffix)
    return (CRLF + " ").join(words)


def _ew_payload(data: bytes, mode: str) -> str:
    if mode.upper() == "B":
        return base64.b64encode(data).decode("ascii")
    out = []
    for b in data:
        if b == 0x20:
            out.append("_")
        elif b in _Q_SAFE:
            out.append(chr(b))
        else:
            out.append(f"={b:02X}")
    return "".join(out)


# --------------------------------------------------------------------------- generator data


@dataclass(frozen=True)
class _Lang:
    code: str
    charsets: tuple[str, ...]  # header/body charsets used by this language's senders
    first: tuple[tuple[str, str], ...]  # (display, ascii for the address)
    last: tuple[tuple[str, str], ...]
    subjects: tuple[str, ...]
    bodies: tuple[str, ...]
    reply: str  # reply prefix as this language's mailers write it
    auto: str  # auto-reply subject prefix
    tz: tuple[int, ...]  # UTC offsets in minutes
    tlds: tuple[str, ...]
    weight: int


_LANGS: tuple[_Lang, ...] = (
    _Lang(
        "en", ("us-ascii", "utf-8"),
        (("James", "james"), ("Mary", "mary"), ("Robert", "robert"), ("Patricia", "patricia"),
         ("Zoë", "zoe"), ("Renée", "renee"), ("Michael", "michael"), ("Linda", "linda"),
         ("David", "david"), ("Sarah", "sarah"), ("Chloé", "chloe"), ("Sean", "sean")),
        (("Smith", "smith"), ("Johnson", "johnson"), ("O'Brien", "obrien"), ("Williams", "williams"),
         ("Brown", "brown"), ("Taylor", "taylor"), ("Nuñez", "nunez"), ("Clarke", "clarke")),
        ("Quick question about the proposal", "Meeting notes from Tuesday", "Invoice {n}",
         "Follow-up: contract renewal", "Lunch next week?", "Updated slides attached",
         "Re-scheduling our call", "Quote for {n} licences", "Intro: Sarah <> Alice",
         "Feedback on the draft – v{n}", "Support ticket #{n}", "Q{q} planning",
         "Your café order ☕", "Thanks — great meeting today"),
        ("Hi,\n\nCould you have a look at the attached figures before Friday?\n\nThanks,\n",
         "Hello,\n\nFollowing up on our conversation — are you available for a call on Thursday?\n\nBest regards\n",
         "Hi there,\n\nJust checking in on the status of the order.\n\nCheers\n"),
        "Re: ", "Automatic reply: ", (0, -300, -360, -420, -480, 60), ("example.com", "example"), 40,
    ),
    _Lang(
        "de", ("iso-8859-1", "utf-8", "iso-8859-15"),
        (("Jürgen", "juergen"), ("Björn", "bjoern"), ("Anna", "anna"), ("Günther", "guenther"),
         ("Käthe", "kaethe"), ("Lukas", "lukas"), ("Sören", "soeren"), ("Heike", "heike")),
        (("Müller", "mueller"), ("Weiß", "weiss"), ("Schröder", "schroeder"), ("Schmidt", "schmidt"),
         ("Höfler", "hoefler"), ("Becker", "becker"), ("Groß", "gross"), ("Fuchs", "fuchs")),
        ("Angebot für Ihr Projekt", "Besprechung nächste Woche", "Rechnung Nr. {n}",
         "Änderungen am Vertrag", "Rückfrage zur Lieferung", "Termin am Dienstag – Bestätigung",
         "Unterlagen für die Prüfung", "Grüße aus München", "Kostenvoranschlag {n}"),
        ("Hallo,\n\nanbei die Unterlagen für die Besprechung. Können Sie bitte bis Freitag prüfen?\n\nViele Grüße\n",
         "Sehr geehrte Damen und Herren,\n\nvielen Dank für Ihre Anfrage. "
         "Gerne übersenden wir Ihnen unser Angebot.\n\nMit freundlichen Grüßen\n"),
        "AW: ", "Abwesenheitsnotiz: ", (60, 120), ("example.de", "example"), 15,
    ),
    _Lang(
        "fr", ("iso-8859-1", "utf-8"),
        (("Frédéric", "frederic"), ("Hélène", "helene"), ("François", "francois"), ("Amélie", "amelie"),
         ("Jérôme", "jerome"), ("Claire", "claire")),
        (("Lefèvre", "lefevre"), ("Dubois", "dubois"), ("Moreau", "moreau"), ("Girard", "girard"),
         ("Bézier", "bezier")),
        ("Réunion de lundi", "Facture n° {n}", "Proposition commerciale – suite", "Demande de devis",
         "Compte rendu de la réunion", "Rendez-vous à Paris"),
        ("Bonjour,\n\nVeuillez trouver ci-joint le compte rendu. N'hésitez pas à me contacter.\n\nCordialement\n",),
        "RE: ", "Réponse automatique : ", (60, 120), ("example.fr", "example"), 8,
    ),
    _Lang(
        "es", ("iso-8859-1", "utf-8"),
        (("José", "jose"), ("María", "maria"), ("Iñigo", "inigo"), ("Lucía", "lucia")),
        (("Peña", "pena"), ("Núñez", "nunez"), ("García", "garcia"), ("Martínez", "martinez")),
        ("Reunión del jueves", "Presupuesto año {y}", "Información sobre el pedido {n}", "¿Podemos hablar mañana?"),
        ("Hola,\n\n¿Podrías revisar el presupuesto antes del jueves? Gracias.\n\nUn saludo\n",),
        "RE: ", "Respuesta automática: ", (60, -300, -180), ("example.es", "example"), 6,
    ),
    _Lang(
        "ru", ("koi8-r", "utf-8"),
        (("Юрий", "yuri"), ("Ольга", "olga"), ("Дмитрий", "dmitry"), ("Наталья", "natalia")),
        (("Иванов", "ivanov"), ("Смирнова", "smirnova"), ("Кузнецов", "kuznetsov"), ("Попова", "popova")),
        ("Встреча в пятницу", "Счет {n}", "Коммерческое предложение", "Вопрос по договору",
         "Отчет за квартал"),
        ("Добрый день!\n\nНаправляю вам документы по проекту. Прошу подтвердить получение.\n\nС уважением\n",),
        "Re: ", "Автоответ: ", (180,), ("example.ru", "example"), 6,
    ),
    _Lang(
        "ja", ("shift_jis", "iso-2022-jp", "utf-8"),
        (("太郎", "taro"), ("花子", "hanako"), ("健", "ken"), ("由美", "yumi")),
        (("山田", "yamada"), ("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi")),
        ("会議の件", "見積書の送付について", "お世話になっております", "資料送付のお願い", "打ち合わせ日程"),
        ("お世話になっております。\n\n資料を添付いたしますので、ご確認ください。\n\nよろしくお願いいたします。\n",),
        "Re: ", "自動応答: ", (540,), ("example.jp", "example"), 5,
    ),
    _Lang(
        "pl", ("iso-8859-2", "utf-8"),
        (("Łukasz", "lukasz"), ("Małgorzata", "malgorzata"), ("Paweł", "pawel")),
        (("Wąsik", "wasik"), ("Żółkiewski", "zolkiewski"), ("Kowalczyk", "kowalczyk")),
        ("Zamówienie nr {n}", "Spotkanie w środę", "Oferta współpracy"),
        ("Dzień dobry,\n\nw załączniku przesyłam ofertę. Proszę o informację zwrotną.\n\nPozdrawiam\n",),
        "Odp: ", "Automatyczna odpowiedź: ", (60, 120), ("example.pl",), 3,
    ),
    _Lang(
        "zh", ("utf-8", "gb2312"),
        (("伟", "wei"), ("芳", "fang"), ("磊", "lei")),
        (("王", "wang"), ("李", "li"), ("张", "zhang")),
        ("项目进展", "合同草案", "下周会议安排"),
        ("您好，\n\n附件是最新的项目进展报告，请查收。\n\n谢谢\n",),
        "回复: ", "自动回复: ", (480,), ("example.cn",), 3,
    ),
)

_COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka", "stark",
              "tyrell", "cyberdyne", "soylent", "massive", "gringotts", "oceanic", "aperture")
_FREEMAIL = ("mail.example.com", "post.example.net", "webmail.example.org")
_MAILERS = ("Microsoft Outlook 16.0", "Mozilla Thunderbird 115.6.0", "Apple Mail (2.3774)",
            "Roundcube Webmail/1.6.5", "K-9 Mail for Android")

_NOREPLY = (
    ("Shop Notifications", "noreply@shop.example.com",
     ("Your order #{n} has shipped", "Ihre Bestellung {n} wurde versandt", "Order confirmation #{n}")),
    ("Cloud Billing", "no-reply@billing.example.net",
     ("Your invoice {n} is available", "Payment received – thank you")),
    ("Issue Tracker", "notifications@tracker.example.org",
     ("[tracker] Issue #{n} assigned to you", "[tracker] New comment on #{n}")),
    ("Bank Example", "do-not-reply@bank.example",
     ("Kontoauszug verfügbar", "Security alert: new sign-in")),
    ("", "mailer-daemon@mx.example.com", ("Delivery Status Notification (Delay)",)),
)

_LISTS = (
    ("dev", "dev@lists.example.org", "Developer discussion <dev.lists.example.org>"),
    ("users", "users@lists.example.org", "<users.lists.example.org>"),
    ("vereinsnews", "news@verein.example.de", "Vereinsnachrichten <vereinsnews.verein.example.de>"),
)
_LIST_TOPICS = ("Release {y}.{q} planning", "Build failure on main", "Proposal: drop legacy API",
                "Wöchentlicher Bericht KW {q}", "Security update {n}", "Call for volunteers")

_NEWSLETTERS = (
    ("Example Weekly", "newsletter@news.example.com", "Example Weekly #{n}: what's new"),
    ("Café Rezepte", "info@rezepte.example.de", "Neue Rezepte für die Woche ✨"),
)


@dataclass
class _Contact:
    addr: str
    header: str  # ready-to-use address header value, RFC 2047 encoded as needed
    lang: _Lang
    charset: str
    tz: int


@dataclass
class _Thread:
    msgid: str
    refs: tuple[str, ...]
    subject: str  # encoded, without reply prefix
    lang: _Lang
    contacts: tuple[int, ...]


_T = TypeVar("_T")
_M64 = (1 << 64) - 1


def _mix(seed: int, idx: int) -> int:
    """splitmix64 of (seed, idx), widened to 128 bits for several picks."""
    out = 0
    x = (seed * 0x9E3779B97F4A7C15 + idx) & _M64
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & _M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out = (out << 64) | (z ^ (z >> 31))
    return out


def _fmt_date(ts: float, tz_minutes: int) -> str:
    t = time.gmtime(ts + tz_minutes * 60)
    sign = "+" if tz_minutes >= 0 else "-"
    hh, mm = divmod(abs(tz_minutes), 60)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hh:02d}{mm:02d}")


def _body_part(text: str, charset: str, rng: random.Random) -> tuple[str, bytes]:
    """(content headers, encoded body) for ``text`` in ``charset``."""
    text = text.replace("\n", CRLF)
    if text.isascii():
        return "Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit", text.encode()
    data = text.encode(charset)
    if charset in ("iso-2022-jp",):
        # 7-bit by construction, which is how Japanese mailers send it.
        return f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 7bit", data
    cte = rng.choice(("quoted-printable", "base64", "8bit"))
    if cte == "base64":
        enc = base64.encodebytes(data).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        enc = _qp(data)
    else:
        enc = data
    return f"Content-Type: text/plain; charset={charset}; format=flowed\r\nContent-Transfer-Encoding: {cte}", enc


class _Generator:
    """State for one ``generate_mailbox`` run; everything derives from ``rng``."""

    def __init__(self, owner: str, owner_name: str, n_contacts: int, seed: int, sent_folder: str):
        self.rng = random.Random(seed)
        self.seed = seed
        self.owner = owner
        self.owner_domain = owner.rpartition("@")[2]
        self.owner_header = f"{owner_name} <{owner}>" if owner_name.isascii() else \
            f"{encode_words(owner_name, 'utf-8')} <{owner}>"
        self.sent_folder = sent_folder
        self.n_contacts = max(1, n_contacts)
        self.contacts: dict[int, _Contact] = {}
        self.seq = 0
        self.sent_threads: deque[_Thread] = deque(maxlen=400)
        self.inbox_threads: deque[_Thread] = deque(maxlen=400)
        self.list_threads: dict[str, deque[_Thread]] = {name: deque(maxlen=100) for name, _, _ in _LISTS}
        self._lang_rng_seed = seed
        self._cum_weights = list(itertools.accumulate(lang.weight for lang in _LANGS))
        self.subject_pool: dict[tuple[str, str], list[str]] = {}
        self.body_pool: dict[tuple[str, str], list[tuple[str, bytes]]] = {}

    # -- pools

    def contact(self, idx: int) -> _Contact:
        c = self.contacts.get(idx)
        if c is not None:
            return c
        # A hash of (seed, idx) rather than the shared rng keeps each contact
        # identical however many messages are generated and in what order.
        h = _mix(self._lang_rng_seed, idx)

        def pick(seq: Sequence[_T]) -> _T:
            nonlocal h
            h, k = divmod(h, len(seq))
            return seq[k]

        lang = _LANGS[bisect.bisect_right(self._cum_weights, pick(range(self._cum_weights[-1])))]
        charset = pick(lang.charsets)
        first, first_a = pick(lang.first)
        last, last_a = pick(lang.last)
        if pick(range(10)) < 3:
            domain = pick(_FREEMAIL)
            local = f"{first_a}.{last_a}{idx}"
        else:
            domain = f"{_COMPANIES[idx % len(_COMPANIES)]}{idx // 40}.{pick(lang.tlds)}"
            local = f"{first_a}.{last_a}" if pick(range(10)) < 8 else f"{first_a[0]}{last_a}"
        addr = f"{local}@{domain}"
        style = pick(range(100)) / 100
        tz = pick(lang.tz)
        if style < 0.08:
            header = addr  # bare address, no display name
        else:
            name = f"{last}, {first}" if style < 0.2 and lang.code in ("de", "en") else \
                f"{last}{first}" if lang.code in ("ja", "zh") else f"{first} {last}"
            try:
                name.encode(charset)
            except UnicodeEncodeError:
                charset = "utf-8"
            if name.isascii():
                header = email.utils.formataddr((name, addr))
            else:
                header = f"{encode_words(name, charset, 'Q' if charset.startswith('iso-8859') else 'B')} <{addr}>"
        c = _Contact(addr, header, lang, charset, tz)
        self.contacts[idx] = c
        return c

    def pick_contact(self) -> int:
        # Skewed so a few contacts dominate, as in real mailboxes.
        return int(self.n_contacts * self.rng.random() ** 3)

    def subject(self, lang: _Lang, charset: str) -> str:
        pool = self.subject_pool.get((lang.code, charset))
        if pool is None:
            pool = []
            for tpl in lang.subjects:
                for variant in range(3):
                    text = tpl.format(n=1000 + variant * 37, y=2023 + variant, q=variant + 1)
                    try:
                        pool.append(encode_words(text, charset, "Q" if charset.startswith("iso-8859") else "B"))
                    except UnicodeEncodeError:
                        pool.append(encode_words(text, "utf-8"))
            self.subject_pool[(lang.code, charset)] = pool
        subj = self.rng.choice(pool)
        # A plain-text tail keeps subjects distinct without re-encoding per message.
        return f"{subj} ({self.rng.randrange(1, 9999)})" if self.rng.random() < 0.5 else subj

    def body(self, lang: _Lang, charset: str) -> tuple[str, bytes]:
        pool = self.body_pool.get((lang.code, charset))
        if pool is None:
            pool = []
            for text in lang.bodies:
                for _ in range(3):
                    try:
                        pool.append(_body_part(text, charset, self.rng))
                    except UnicodeEncodeError:
                        pool.append(_body_part(text, "utf-8", self.rng))
            self.body_pool[(lang.code, charset)] = pool
        return self.rng.choice(pool)

    # -- assembly

    def msgid(self, domain: str) -> str:
        self.seq += 1
        return f"<{self.seq:x}.{self.rng.getrandbits(48):012x}.{self.seed}@{domain}>"

    def received(self, ts: float, domain: str) -> str:
        ip = f"{self.rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{self.rng.randrange(1, 255)}"
        return (f"Received: from mx.{domain} (mx.{domain} [{ip}])\r\n"
                f"\tby mx.{self.owner_domain} with ESMTPS id {self.rng.getrandbits(40):010x}\r\n"
                f"\tfor <{self.owner}>; {_fmt_date(ts + self.rng.randrange(1, 90), 0)}")

    def assemble(self, head: list[str], content: tuple[str, bytes], attach: bool) -> bytes:
        ctype, body = content
        if attach or self.rng.random() < 0.15:
            boundary = f"=_part_{self.seq:x}_{self.rng.getrandbits(32):08x}"
            parts = [f"--{boundary}\r\n{ctype}\r\n\r\n".encode() + body + b"\r\n"]
            if attach:
                name = self.rng.choice(("report.pdf", "Rechnung_Müller.pdf", "見積書.pdf", "notes.txt"))
                disp = (f'attachment; filename="{name}"' if name.isascii() else
                        f"attachment; filename*=utf-8''{_pct(name)}")
                payload = base64.encodebytes(b"%PDF-1.4\n% test attachment " + self.seq.to_bytes(4, "big") * 20)
                parts.append(
                    f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Disposition: {disp}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
                    + payload.replace(b"\n", b"\r\n")
                )
                mtype = "mixed"
            else:
                parts.append(f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n"
                             f"Content-Transfer-Encoding: 7bit\r\n\r\n"
                             f"<html><body><p>See the text part.</p></body></html>\r\n".encode())
                mtype = "alternative"
            head.append(f'MIME-Version: 1.0\r\nContent-Type: multipart/{mtype}; boundary="{boundary}"')
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        else:
            head.append("MIME-Version: 1.0")
            head.append(ctype)
        return (CRLF.join(head) + CRLF + CRLF).encode("ascii") + body

    @staticmethod
    def refs_header(refs: Sequence[str]) -> str:
        # Real mailers trim long chains to the first and the most recent ids.
        if len(refs) > 12:
            refs = [refs[0], *refs[-11:]]
        return "References: " + (CRLF + " ").join(refs)

    # -- message kinds

    def sent(self, ts: float) -> bytes:
        rng = self.rng
        msgid = self.msgid(self.owner_domain)
        parent = None
        if self.inbox_threads and rng.random() < 0.5:
            parent = self.inbox_threads[rng.randrange(len(self.inbox_threads))]
        if parent is not None:
            contacts = parent.contacts
            lang = parent.lang
            subject = parent.subject
            refs = (*parent.refs, parent.msgid)
        else:
            contacts = tuple(dict.fromkeys(self.pick_contact() for _ in range(rng.choice((1, 1, 1, 2, 3)))))
            lang = self.contact(contacts[0]).lang
            subject = self.subject(lang, "utf-8")
            refs = ()
        recipients = [self.contact(i) for i in contacts]
        head = [
            f"From: {self.owner_header}",
            "To: " + ",\r\n ".join(c.header for c in recipients[:2]),
        ]
        if len(recipients) > 2:
            head.append("Cc: " + ",\r\n ".join(c.header for c in recipients[2:]))
        head += [
            f"Subject: {_reply_prefix(lang) if parent else ''}{subject}",
            f"Date: {_fmt_date(ts, 60)}",
            f"Message-ID: {msgid}",
        ]
        if refs:
            head += [f"In-Reply-To: {refs[-1]}", self.refs_header(refs)]
        head.append(f"User-Agent: {_MAILERS[self.seq % len(_MAILERS)]}")
        thread = _Thread(msgid, refs, subject, lang, contacts)
        self.sent_threads.append(thread)
        return self.assemble(head, self.body(lang, "utf-8"), rng.random() < 0.05)

    def inbox(self, ts: float) -> bytes:
        rng = self.rng
        roll = rng.random()
        if self.sent_threads and roll < 0.22:
            return self.reply_to_sent(ts)
        if self.sent_threads and roll < 0.25:
            return self.auto_reply(ts)
        if roll < 0.40:
            return self.list_mail(ts)
        if roll < 0.52:
            return self.noreply(ts)
        if roll < 0.56:
            return self.newsletter(ts)
        return self.personal(ts)

    def personal(self, ts: float, parent: _Thread | None = None, sender: int | None = None) -> bytes:
        rng = self.rng
        idx = sender if sender is not None else self.pick_contact()
        c = self.contact(idx)
        msgid = self.msgid(c.addr.rpartition("@")[2])
        lang = parent.lang if parent else c.lang
        subject = parent.subject if parent else self.subject(lang, c.charset)
        refs = (*parent.refs, parent.msgid) if parent else ()
        roll = rng.random()
        to = "undisclosed-recipients:;" if roll < 0.01 else self.owner_header
        head = [
            self.received(ts, c.addr.rpartition("@")[2]),
            f"Return-Path: <{c.addr}>",
            f"From: {c.header}",
            f"To: {to}",
        ]
        if 0.01 <= roll < 0.15:
            others = [self.contact(self.pick_contact()).header for _ in range(rng.randrange(1, 4))]
            head.append("Cc: " + ",\r\n ".join(others))
        head += [
            f"Subject: {_reply_prefix(lang) if parent else ''}{subject}",
            f"Date: {_fmt_date(ts, c.tz)}",
            f"Message-ID: {msgid}",
        ]
        if refs:
            head += [f"In-Reply-To: {refs[-1]}", self.refs_header(refs)]
        if rng.random() < 0.6:
            head.append(f"X-Mailer: {_MAILERS[rng.randrange(len(_MAILERS))]}")
        members = parent.contacts if parent else (idx,)
        self.inbox_threads.append(_Thread(msgid, refs, subject, lang, members))
        return self.assemble(head, self.body(lang, c.charset), rng.random() < 0.05)

    def reply_to_sent(self, ts: float) -> bytes:
        parent = self.sent_threads[self.rng.randrange(len(self.sent_threads))]
        return self.personal(ts, parent, self.rng.choice(parent.contacts))

    def auto_reply(self, ts: float) -> bytes:
        rng = self.rng
        parent = self.sent_threads[rng.randrange(len(self.sent_threads))]
        c = self.contact(rng.choice(parent.contacts))
        domain = c.addr.rpartition("@")[2]
        head = [
            self.received(ts, domain),
            "Return-Path: <>",
            f"From: {c.header}",
            f"To: {self.owner_header}",
            f"Subject: {_prefix(c.lang.auto)}{parent.subject}",
            f"Date: {_fmt_date(ts, c.tz)}",
            f"Message-ID: {self.msgid(domain)}",
            f"In-Reply-To: {parent.msgid}",
            self.refs_header((*parent.refs, parent.msgid)),
            "Auto-Submitted: auto-replied",
            "X-Autoreply: yes",
        ]
        if rng.random() < 0.5:
            head.append("X-Auto-Response-Suppress: All")
        text = "I am out of the office until Monday and will reply on my return.\n"
        return self.assemble(head, _body_part(text, "us-ascii", rng), False)

    def list_mail(self, ts: float) -> bytes:
        rng = self.rng
        name, post, list_id = _LISTS[rng.randrange(len(_LISTS))]
        c = self.contact(self.pick_contact())
        list_domain = post.rpartition("@")[2]
        threads = self.list_threads[name]
        parent = threads[rng.randrange(len(threads))] if threads and rng.random() < 0.5 else None
        if parent is not None:
            subject = parent.subject
            refs = (*parent.refs, parent.msgid)
        else:
            topic = _LIST_TOPICS[rng.randrange(len(_LIST_TOPICS))].format(
                n=rng.randrange(100, 999), y=2023 + rng.randrange(3), q=rng.randrange(1, 52))
            subject = f"[{name}] {encode_words(topic, 'utf-8', 'Q')}"
            refs = ()
        msgid = self.msgid(c.addr.rpartition("@")[2])
        head = [
            self.received(ts, list_domain),
            f"Return-Path: <{name}-bounces@{list_domain}>",
            f"From: {c.header}",
            f"To: {post}",
            f"Subject: {'Re: ' if parent else ''}{subject}",
            f"Date: {_fmt_date(ts, c.tz)}",
            f"Message-ID: {msgid}",
        ]
        if refs:
            head += [f"In-Reply-To: {refs[-1]}", self.refs_header(refs)]
        head += [
            f"List-Id: {list_id}",
            f"List-Unsubscribe: <mailto:{name}-unsubscribe@{list_domain}>,\r\n"
            f" <https://{list_domain}/unsubscribe/{name}>",
            f"List-Post: <mailto:{post}>",
            f"Precedence: {rng.choice(('bulk', 'list'))}",
            f"Sender: {name}-bounces@{list_domain}",
        ]
        threads.append(_Thread(msgid, refs, subject, c.lang, ()))
        return self.assemble(head, self.body(c.lang, c.charset), False)

    def noreply(self, ts: float) -> bytes:
        rng = self.rng
        name, addr, subjects = _NOREPLY[rng.randrange(len(_NOREPLY))]
        domain = addr.rpartition("@")[2]
        subject = subjects[rng.randrange(len(subjects))].format(n=rng.randrange(10000, 99999))
        head = [
            self.received(ts, domain),
            f"Return-Path: <bounce-{rng.getrandbits(32):08x}@{domain}>",
            f"From: {email.utils.formataddr((name, addr)) if name else addr}",
            f"To: {self.owner}",
            f"Subject: {encode_words(subject, 'utf-8')}",
            f"Date: {_fmt_date(ts, 0)}",
            f"Message-ID: {self.msgid(domain)}",
        ]
        if rng.random() < 0.5:
            head.append("Auto-Submitted: auto-generated")
        if rng.random() < 0.3:
            head.append(f"Reply-To: support@{domain}")
        text = "This is an automated message. Please do not reply to this email.\n"
        return self.assemble(head, _body_part(text, "us-ascii", rng), False)

    def newsletter(self, ts: float) -> bytes:
        rng = self.rng
        name, addr, subject = _NEWSLETTERS[rng.randrange(len(_NEWSLETTERS))]
        domain = addr.rpartition("@")[2]
        head = [
            self.received(ts, domain),
            f"From: {encode_words(name, 'utf-8', 'Q')} <{addr}>",
            f"To: {self.owner}",
            f"Subject: {encode_words(subject.format(n=rng.randrange(1, 300)), 'utf-8')}",
            f"Date: {_fmt_date(ts, 60)}",
            f"Message-ID: {self.msgid(domain)}",
            f"List-Unsubscribe: <https://{domain}/u/{rng.getrandbits(64):016x}>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "Precedence: bulk",
        ]
        return self.assemble(head, _body_part("Our weekly highlights.\n", "us-ascii", rng), False)


def _reply_prefix(lang: _Lang) -> str:
    return _prefix(lang.reply)


def _prefix(text: str) -> str:
    if text.isascii():
        return text
    # Encoded words swallow the whitespace between them, so keep the space outside.
    return encode_words(text.rstrip(), "utf-8") + " "


def _pct(text: str) -> str:
    return "".join(chr(b) if chr(b).isalnum() or chr(b) in "._-" else f"%{b:02X}"
                   for b in text.encode("utf-8"))


def generate_mailbox(
    n_inbox: int,
    n_sent: int,
    owner: str = "alice@example.com",
    correspondents: int = 20000,
    seed: int = 0,
    *,
    owner_name: str | None = None,
    start: dt.datetime = dt.datetime(2023, 1, 2, 8, 0, tzinfo=dt.UTC),
    end: dt.datetime = dt.datetime(2025, 1, 1, 8, 0, tzinfo=dt.UTC),
    sent_folder: str = "Sent",
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(folder, raw)`` for ``n_inbox`` INBOX and ``n_sent`` Sent messages.

    Messages come in date order between ``start`` and ``end``, INBOX and Sent
    interleaved, so replies always follow what they reply to. The same
    arguments always give the same bytes. Folder names are "INBOX" and
    ``sent_folder``.
    """
    total = n_inbox + n_sent
    if total <= 0:
        return
    if owner_name is None:
        owner_name = owner.partition("@")[0].replace(".", " ").title()
    gen = _Generator(owner, owner_name, correspondents, seed, sent_folder)
    rng = gen.rng
    # Interleave folders at random but with exact counts.
    order = [True] * n_sent + [False] * n_inbox
    rng.shuffle(order)
    t0 = start.timestamp()
    step = (end.timestamp() - t0) / total
    for i, is_sent in enumerate(order):
        ts = t0 + step * i + rng.random() * step
        if is_sent:
            yield sent_folder, gen.sent(ts)
        else:
            yield "INBOX", gen.inbox(ts)


# --------------------------------------------------------------------------- malformed corpus


def _msg(*headers: str | bytes, body: bytes = b"Body text.\r\n") -> bytes:
    lines = [h if isinstance(h, bytes) else h.encode("utf-8") for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_FROM = "From: Sender <sender@example.com>"
_TO = "To: Alice <alice@example.com>"
_DATE = "Date: Mon, 06 Jan 2025 10:00:00 +0100"


def _std(*extra: str | bytes, subject: str = "Subject: Test", mid: str = "Message-ID: <m@example.com>",
         body: bytes = b"Body text.\r\n") -> bytes:
    return _msg(_FROM, _TO, subject, _DATE, mid, *extra, body=body)


def malformed_corpus() -> list[tuple[str, bytes]]:
    """Named messages that each exhibit one defect (the name says which).

    Meant for "parser must not crash" tests; some (empty, NUL bytes) cannot
    be APPENDed over IMAP and must be written to Maildir directly.
    """
    nested = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode() for i in range(60)
    ) + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    many_refs = " ".join(f"<ref{i}.{i * 7919}@example.com>" for i in range(5000))
    folded_refs = "\r\n ".join(f"<ref{i}@example.com>" for i in range(3000))
    huge_header = "X-Huge: " + "\r\n ".join("x" * 76 for _ in range(13000))
    many_rcpts = ",\r\n ".join(f"User {i} <user{i}@example.com>" for i in range(2000))
    corpus: list[tuple[str, bytes]] = [
        ("empty_message", b""),
        ("only_whitespace", b"\r\n\r\n\r\n"),
        ("headers_only_no_blank_line", f"{_FROM}\r\n{_TO}\r\nSubject: no body\r\n{_DATE}".encode()),
        ("headers_only_with_blank_line", _std(body=b"")),
        ("body_only_no_headers", b"Just some text without any header at all.\r\nSecond line.\r\n"),
        ("missing_from", _msg(_TO, "Subject: no from", _DATE, "Message-ID: <nofrom@example.com>")),
        ("missing_date", _msg(_FROM, _TO, "Subject: no date", "Message-ID: <nodate@example.com>")),
        ("missing_message_id", _msg(_FROM, _TO, "Subject: no id", _DATE)),
        ("missing_to_and_cc", _msg(_FROM, "Subject: nobody", _DATE, "Message-ID: <noto@example.com>")),
        ("missing_subject", _msg(_FROM, _TO, _DATE, "Message-ID: <nosubj@example.com>")),
        ("empty_header_values", _msg("From:", "To:", "Subject:", "Date:", "Message-ID:")),
        ("duplicate_from_and_subject", _std("From: Other <other@example.com>", "Subject: Second subject")),
        ("nul_bytes_in_body", _std(body=b"before\x00after\r\n\x00\x00\r\n")),
        ("nul_byte_in_subject", _std(subject=b"Subject: nul\x00inside".decode("latin-1"))),
        ("raw_8bit_utf8_subject", _msg(_FROM, _TO, "Subject: Grüße aus Köln – 東京", _DATE,
                                       "Message-ID: <8bit@example.com>")),
        ("raw_8bit_latin1_display_name", _msg("From: J\xfcrgen M\xfcller <j@example.de>".encode("latin-1"),
                                              _TO, "Subject: latin1", _DATE, "Message-ID: <l1@example.com>")),
        ("raw_8bit_invalid_utf8_header", _msg(_FROM, _TO, b"Subject: bad \xff\xfe\xc3\x28 bytes", _DATE)),
        ("unknown_charset_encoded_word", _std(subject="Subject: =?x-unknown-42?Q?caf=E9?=")),
        ("invalid_base64_encoded_word", _std(subject="Subject: =?utf-8?B?!!!not*base64***?=")),
        ("truncated_encoded_word", _std(subject="Subject: =?utf-8?Q?unterminated=C3")),
        ("encoded_word_invalid_utf8_bytes", _std(subject="Subject: =?utf-8?B?/+7/?=")),
        ("encoded_word_mislabelled_charset", _std(subject="Subject: =?us-ascii?Q?caf=E9?=")),
        ("unknown_body_charset", _std("MIME-Version: 1.0", "Content-Type: text/plain; charset=x-martian",
                                      body=b"Gr\xfc\xdfe\r\n")),
        ("mislabelled_body_charset_latin1_as_utf8",
         _std("MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit", body="Grüße, café\r\n".encode("latin-1"))),
        ("invalid_base64_body", _std("MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                                     "Content-Transfer-Encoding: base64", body=b"@@@ not base64 ***\r\n")),
        ("unknown_transfer_encoding", _std("MIME-Version: 1.0", "Content-Transfer-Encoding: x-uuencode-ish")),
        ("invalid_date_text", _msg(_FROM, _TO, "Subject: bad date", "Date: yesterday afternoon",
                                   "Message-ID: <d1@example.com>")),
        ("invalid_date_month_13", _msg(_FROM, _TO, "Subject: bad date", "Date: Mon, 32 Foo 2024 25:61:61 +9999",
                                       "Message-ID: <d2@example.com>")),
        ("date_year_10000", _msg(_FROM, _TO, "Subject: far future", "Date: Fri, 01 Jan 10000 00:00:00 +0000",
                                 "Message-ID: <d3@example.com>")),
        ("date_two_digit_year_no_tz", _msg(_FROM, _TO, "Subject: old style", "Date: 3 Mar 99 10:00:00",
                                           "Message-ID: <d4@example.com>")),
        ("date_epoch_zero", _msg(_FROM, _TO, "Subject: 1970", "Date: Thu, 01 Jan 1970 00:00:00 +0000",
                                 "Message-ID: <d5@example.com>")),
        ("date_iso8601_format", _msg(_FROM, _TO, "Subject: iso date", "Date: 2024-05-06T07:08:09Z",
                                     "Message-ID: <d6@example.com>")),
        ("from_without_angle_brackets", _msg("From: John Doe john@example.com", _TO, "Subject: addr", _DATE)),
        ("from_unbalanced_quote", _msg('From: "Doe, John <john@example.com>', _TO, "Subject: quote", _DATE)),
        ("from_unclosed_angle_bracket", _msg("From: John <john@example.com", _TO, "Subject: angle", _DATE)),
        ("from_multiple_at_signs", _msg("From: john@doe@example.com", _TO, "Subject: at", _DATE)),
        ("from_no_domain", _msg("From: root", _TO, "Subject: local only", _DATE)),
        ("from_multiple_mailboxes", _msg("From: a@example.com, b@example.com", _TO, "Subject: two", _DATE)),
        ("to_undisclosed_recipients_group", _msg(_FROM, "To: undisclosed-recipients:;", "Subject: bcc", _DATE)),
        ("to_group_with_members", _msg(_FROM, "To: Team: a@example.com, \"B\" <b@example.com>;, c@example.com",
                                       "Subject: group", _DATE)),
        ("address_with_comments", _msg("From: john@example.com (John Doe)",
                                        "To: (comment) alice(at home)@example.com (Alice)", "Subject: comments",
                                        _DATE)),
        ("address_quoted_local_part", _msg('From: "john..doe"@example.com', _TO, "Subject: quoted", _DATE)),
        ("idn_domain_utf8_raw", _msg("From: Jörg <joerg@münchen.example>", _TO, "Subject: idn", _DATE)),
        ("idn_domain_punycode", _msg("From: Joerg <joerg@xn--mnchen-3ya.example>", _TO, "Subject: idn", _DATE)),
        ("utf8_local_part_smtputf8", _msg("From: 用户@例子.example", _TO, "Subject: eai", _DATE)),
        ("encoded_word_inside_address", _msg("From: =?utf-8?Q?j=C3=B6rg?=@example.com", _TO,
                                             "Subject: ew in addr", _DATE)),
        ("very_long_references_one_line", _std(f"References: {many_refs}", "In-Reply-To: <ref4999.0@example.com>")),
        ("very_long_references_folded", _std(f"References: {folded_refs}")),
        ("in_reply_to_garbage", _std("In-Reply-To: not an id at all, <<<>>>", "References: <<a@b>>> junk")),
        ("message_id_without_brackets", _std(mid="Message-ID: plainid@example.com")),
        ("message_id_with_spaces_and_duplicates", _std("Message-ID: <dup@example.com>",
                                                        mid="Message-ID: < spaced id @example.com >")),
        ("huge_header_about_1mb", _std(huge_header)),
        ("two_thousand_recipients", _msg(_FROM, f"To: {many_rcpts}", "Subject: many", _DATE)),
        ("very_long_unfolded_subject", _std(subject="Subject: " + "long " * 20000)),
        ("very_long_body_line_no_newline", _std(body=b"x" * 300_000)),
        ("header_line_without_colon", _std("This line has no colon", "X-After: still here")),
        ("continuation_line_first", b" leading continuation\r\n" + _std()),
        ("whitespace_before_colon", _std("Subject : spaced colon", "From : Spaced <s@example.com>")),
        ("non_ascii_header_name", _std("X-Grüße: value".encode())),
        ("lf_only_line_endings", _std().replace(b"\r\n", b"\n")),
        ("cr_only_line_endings", _std().replace(b"\r\n", b"\r")),
        ("mixed_line_endings", _msg(_FROM, _TO, "Subject: mixed", _DATE).replace(b"\r\n", b"\n", 2)
         + b"line1\rline2\nline3\r\n"),
        ("utf8_bom_at_start", b"\xef\xbb\xbf" + _std()),
        ("mbox_from_line_at_start", b"From sender@example.com Mon Jan  6 10:00:00 2025\r\n" + _std()),
        ("multipart_missing_boundary_param", _std("MIME-Version: 1.0", "Content-Type: multipart/mixed",
                                                  body=b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n")),
        ("multipart_boundary_never_closed",
         _std("MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="zz"',
              body=b"--zz\r\nContent-Type: text/plain\r\n\r\nunterminated part\r\n")),
        ("multipart_boundary_not_present_in_body",
         _std("MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="never"', body=b"plain text\r\n")),
        ("multipart_nested_60_levels", _std("MIME-Version: 1.0", body=nested)),
        ("content_type_garbage", _std("MIME-Version: 1.0", "Content-Type: ;;;/// charset==\"\"\"")),
        ("content_type_unclosed_quotes", _std("MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8')),
        ("rfc2231_filename_bad_charset",
         _std("MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="a"',
              body=b"--a\r\nContent-Type: application/pdf\r\n"
                   b"Content-Disposition: attachment; filename*=x-bogus''%FF%FE.pdf\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--a--\r\n")),
        ("binary_body_without_mime", _std(body=bytes(range(1, 256)) * 4)),
        ("tab_and_control_chars_in_headers", _std("X-Ctrl: a\x01b\x07c\x1bd", subject="Subject:\ttabbed\tsubject")),
    ]
    return corpus
