"""Full-text search of stored e-mails: words in the subject and the stored text, ranked, matches highlighted.

The database does the work: on PostgreSQL the generated ``search_vector``
column of ``mail_message`` (subject weighted above the text) with its GIN
index, ranked by ``ts_rank`` and highlighted by ``ts_headline``; on SQLite
the FTS5 table ``mail_message_search`` over ``mail_message``, ranked by
``bm25`` and highlighted by ``highlight``. Both are kept in step by the
database itself (a generated column; triggers), see the migration
c7d41f2a9e60; on SQLite the sync's bulk insert indexes each batch with one
statement instead (``store.insert_messages``, migration e3b9d7f1a5c2).
Words are stemmed as English on both.

The query is a list of words, all of which must match (stemmed): what a
search box means to most people, and the same on both databases. Anything
else the user typed (quotes, operators, punctuation) is only a separator,
so no input can make a query fail.

Only messages on some contact's timeline are found (access.py's rule), each
e-mail once even when stored in two folders or inboxes. Highlighted text is
HTML-escaped first and marked afterwards, so a hostile subject stays text.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
from datetime import datetime

import sqlalchemy as sa
from markupsafe import Markup, escape

from host_app.api import Agent, Contact, db, normalize_email

from .models import RECIPIENT_ROLES, Inbox, Message
from .timeline import DEFAULT_SOURCE

MAX_WORDS = 16
MAX_WORD_LENGTH = 100
DEFAULT_LIMIT = 50
# Best matches of the index ranked before the access rule narrows them down; all of them when too few pass.
FIRST_CANDIDATES = 400
EVERY_MATCH = 2**62
# Contacts found by their e-mails' words (the contacts list's search): the best ranked this many.
CONTACT_MATCH_LIMIT = 1000
_WORD = re.compile(r"\w+")
# English stop words (PostgreSQL's english.stop, the Snowball list): PostgreSQL drops them from a query, and
# they are left out on SQLite too, so "the invoice" finds the same e-mails on both.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself
it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with
about against between into through during before after above below to from up down in out on off over under
again further then once here there when where why how all any both each few more most other some such no nor not
only own same so than too very s t can will just don should now
""".split())
# The same messages as a contact's timeline (timeline.ROLES): received from the address, or sent to it.
_ROLES = "((m.direction = 'in' AND a.role = 'from') OR (m.direction = 'out' AND a.role IN ({recipients})))".format(
    recipients=", ".join(f"'{role}'" for role in RECIPIENT_ROLES))
_ON_A_TIMELINE = (f"EXISTS (SELECT 1 FROM mail_message_address a JOIN contact c ON c.email = a.email "
                  f"WHERE a.message_pk = m.id AND {_ROLES})")
_ON_THE_CONTACTS_TIMELINE = (f"EXISTS (SELECT 1 FROM mail_message_address a "
                             f"WHERE a.message_pk = m.id AND a.email = :contact_email AND {_ROLES})")


@dataclasses.dataclass(frozen=True)
class ContactRef:
    id: int
    email: str
    name: str


@dataclasses.dataclass(frozen=True)
class SearchHit:
    """One found e-mail. ``subject`` and ``excerpt`` are safe markup with ``<mark>`` around matched words."""

    message_id: int
    subject: Markup
    excerpt: Markup
    date: datetime
    direction: str
    from_email: str | None
    from_name: str
    source: str  # the owner agent's name, as on timelines; never the inbox's name
    contacts: tuple[ContactRef, ...]  # whose timelines it is on
    rank: float

    def as_json(self) -> dict:
        return {
            "id": self.message_id, "subject": plain(self.subject), "excerpt": plain(self.excerpt),
            "subject_html": str(self.subject), "excerpt_html": str(self.excerpt),
            "date": self.date.isoformat(), "direction": self.direction,
            "from": {"email": self.from_email, "name": self.from_name}, "source": self.source,
            "contacts": [dataclasses.asdict(c) for c in self.contacts], "rank": self.rank,
        }


def words(query: str) -> list[str]:
    """The words searched for: letters and digits of any script, lower case, no stop words, at most MAX_WORDS."""
    found = []
    for word in _WORD.findall(query.lower()):
        word = word[:MAX_WORD_LENGTH]
        if word not in found and word not in STOP_WORDS:
            found.append(word)
    return found[:MAX_WORDS]


@dataclasses.dataclass(frozen=True)
class Marks:
    """What the database puts around matched words: random per search, so no stored text can fake one."""

    start: str
    stop: str

    @classmethod
    def new(cls) -> Marks:
        token = secrets.token_hex(8)
        return cls(f"hlstart{token}", f"hlstop{token}")


def marked(text: str | None, marks: Marks) -> Markup:
    """Text with marks around matches as HTML: every piece escaped first, then wrapped in <mark>."""
    if not text:
        return Markup("")
    out, inside = [], False
    for piece in re.split(f"({re.escape(marks.start)}|{re.escape(marks.stop)})", text):
        if piece == marks.start:
            inside = True
        elif piece == marks.stop:
            inside = False
        elif piece:
            out.append(Markup("<mark>{}</mark>").format(piece) if inside else escape(piece))
    return Markup("").join(out)


def plain(html: Markup) -> str:
    """A highlighted field back as plain text (for the command line)."""
    return Markup(html).striptags() if "<" in html else Markup(html).unescape()


def search_messages(query: str, contact: Contact | None = None, limit: int = DEFAULT_LIMIT) -> list[SearchHit]:
    """The best ``limit`` e-mails matching every word of ``query``, on ``contact``'s timeline or on any."""
    wanted = words(query)
    if not wanted or limit <= 0:
        return []
    params: dict = {}
    where = _ON_A_TIMELINE
    if contact is not None:
        where = _ON_THE_CONTACTS_TIMELINE
        params["contact_email"] = normalize_email(contact.email)
    backend = _backend()
    # The best matches of the whole index first, then those on a timeline: most mail is on one, so the
    # first round usually has enough. Checking the rule on every match cost 3x on a common word.
    # One contact's mail is a small share of any frequent word's matches: rank them all at once.
    candidates = FIRST_CANDIDATES if contact is None else EVERY_MATCH
    while True:
        ranked, exhausted = backend.ranked(wanted, where, params, limit * 2, candidates)
        chosen: dict[str, tuple[int, float]] = {}
        for message_pk, key, rank in ranked:
            chosen.setdefault(key, (message_pk, rank))  # each e-mail once: copies share a dedup key
            if len(chosen) == limit:
                break
        if len(chosen) == limit or exhausted:
            break
        candidates = EVERY_MATCH  # a second round ranks all: each round ranks every match anyway
    ranks = dict(chosen.values())
    if not ranks:
        return []
    marks = Marks.new()
    highlighted = backend.highlighted(wanted, list(ranks), marks)
    return _hits(ranks, highlighted, marks)


def contact_ids_matching(query: str) -> list[int]:
    """Contacts with an e-mail on their timeline matching every word of ``query`` (best matches first)."""
    wanted = words(query)
    if not wanted:
        return []
    return _backend().contact_ids(wanted, CONTACT_MATCH_LIMIT)


def _hits(ranks: dict[int, float], highlighted: dict[int, tuple[str, str]], marks: Marks) -> list[SearchHit]:
    ids = list(ranks)
    rows = db.session.execute(
        sa.select(Message.id, Message.date, Message.direction, Message.from_email, Message.from_name,
                  sa.func.coalesce(Agent.name, DEFAULT_SOURCE))
        .join(Inbox, Inbox.id == Message.inbox_id)
        .outerjoin(Agent, Agent.id == Inbox.owner_id)
        .where(Message.id.in_(ids))
    ).all()
    contacts: dict[int, list[ContactRef]] = {}
    for message_pk, contact_id, email, name in db.session.execute(
        sa.text(f"SELECT a.message_pk, c.id, c.email, c.name FROM mail_message_address a "
                f"JOIN mail_message m ON m.id = a.message_pk JOIN contact c ON c.email = a.email "
                f"WHERE {_ROLES} AND a.message_pk IN :ids ORDER BY c.email")
        .bindparams(sa.bindparam("ids", expanding=True)),
        {"ids": ids},
    ):
        refs = contacts.setdefault(message_pk, [])
        if all(ref.id != contact_id for ref in refs):
            refs.append(ContactRef(contact_id, email, name or ""))
    by_id = {row[0]: row for row in rows}
    hits = []
    for message_pk in ids:  # best first
        row = by_id.get(message_pk)
        if row is None:  # deleted meanwhile
            continue
        _, date, direction, from_email, from_name, source = row
        subject, excerpt = highlighted.get(message_pk, ("", ""))
        hits.append(SearchHit(
            message_id=message_pk, subject=marked(subject, marks) or Markup("(no subject)"),
            excerpt=marked(excerpt, marks),
            date=date, direction=direction, from_email=from_email, from_name=from_name or "", source=source,
            contacts=tuple(contacts.get(message_pk, ())), rank=round(ranks[message_pk], 6),
        ))
    return hits


class _SQLite:
    """FTS5: ``bm25`` (lower is better; the subject counts 4x the text), ``highlight``."""

    @staticmethod
    def match(wanted: list[str]) -> str:
        # Each word a quoted FTS5 string: run through the porter tokenizer (stemmed), never an operator.
        return " ".join('"' + word.replace('"', '""') + '"' for word in wanted)

    def ranked(self, wanted, where, params, limit, candidates):
        """(id, dedup key, score) of the best ``limit`` matches passing ``where`` among the best ``candidates``
        of the index, and whether those were all the matches."""
        rows = db.session.execute(sa.text(
            f"WITH best AS MATERIALIZED (SELECT rowid AS id, -bm25(mail_message_search, 4.0, 1.0) AS score "
            f"FROM mail_message_search WHERE mail_message_search MATCH :match ORDER BY 2 DESC LIMIT :candidates) "
            f"SELECT * FROM (SELECT m.id, m.dedup_key, best.score FROM best "
            f"JOIN mail_message m ON m.id = best.id WHERE {where} "
            f"ORDER BY best.score DESC, m.date DESC LIMIT :limit) AS passed "
            f"UNION ALL SELECT NULL, NULL, count(*) FROM best"
        ), {**params, "match": self.match(wanted), "limit": limit, "candidates": candidates}).all()
        return _candidates_passed(rows, candidates)

    def highlighted(self, wanted, ids, marks):
        rows = db.session.execute(sa.text(
            "SELECT rowid, highlight(mail_message_search, 0, :start, :stop), "
            "highlight(mail_message_search, 1, :start, :stop) "
            "FROM mail_message_search WHERE mail_message_search MATCH :match AND rowid IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True)),
            {"match": self.match(wanted), "start": marks.start, "stop": marks.stop, "ids": ids})
        return {message_pk: (subject, text) for message_pk, subject, text in rows}

    def contact_ids(self, wanted, limit):
        return list(db.session.scalars(sa.text(
            # bm25 cannot be aggregated where it is computed: the matches are ranked first.
            f"WITH found AS MATERIALIZED (SELECT rowid AS id, bm25(mail_message_search, 4.0, 1.0) AS score "
            f"FROM mail_message_search WHERE mail_message_search MATCH :match) "
            f"SELECT c.id FROM found JOIN mail_message m ON m.id = found.id "
            f"JOIN mail_message_address a ON a.message_pk = m.id AND {_ROLES} "
            f"JOIN contact c ON c.email = a.email GROUP BY c.id ORDER BY min(found.score) LIMIT :limit"
        ), {"match": self.match(wanted), "limit": limit}))


class _PostgreSQL:
    """tsvector and GIN: ``ts_rank`` (the subject weighted A, the text B), ``ts_headline``."""

    # Written out where used, not joined in as a row: a constant the planner sees uses the GIN index.
    QUERY = "plainto_tsquery('english', :words)"

    def ranked(self, wanted, where, params, limit, candidates):
        rows = db.session.execute(sa.text(
            f"WITH best AS MATERIALIZED (SELECT m.id, ts_rank(m.search_vector, {self.QUERY}) AS score "
            f"FROM mail_message m WHERE m.search_vector @@ {self.QUERY} "
            f"ORDER BY score DESC LIMIT :candidates) "
            f"SELECT * FROM (SELECT m.id, m.dedup_key, best.score FROM best "
            f"JOIN mail_message m ON m.id = best.id WHERE {where} "
            f"ORDER BY best.score DESC, m.date DESC LIMIT :limit) AS passed "
            f"UNION ALL SELECT NULL, NULL, count(*) FROM best"
        ), {**params, "words": " ".join(wanted), "limit": limit, "candidates": candidates}).all()
        return _candidates_passed(rows, candidates)

    def highlighted(self, wanted, ids, marks):
        options = f"StartSel={marks.start}, StopSel={marks.stop}, HighlightAll=true"
        rows = db.session.execute(sa.text(
            f"SELECT m.id, ts_headline('english', m.subject, {self.QUERY}, :options), "
            f"ts_headline('english', coalesce(m.preview, ''), {self.QUERY}, :options) "
            f"FROM mail_message m WHERE m.id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True)),
            {"words": " ".join(wanted), "options": options, "ids": ids})
        return {message_pk: (subject, text) for message_pk, subject, text in rows}

    def contact_ids(self, wanted, limit):
        return list(db.session.scalars(sa.text(
            f"SELECT c.id FROM mail_message m "
            f"JOIN mail_message_address a ON a.message_pk = m.id AND {_ROLES} "
            f"JOIN contact c ON c.email = a.email "
            f"WHERE m.search_vector @@ {self.QUERY} GROUP BY c.id "
            f"ORDER BY max(ts_rank(m.search_vector, {self.QUERY})) DESC LIMIT :limit"
        ), {"words": " ".join(wanted), "limit": limit}))


def _candidates_passed(rows, candidates: int) -> tuple[list[tuple], bool]:
    """The rows that passed, best first, and whether the candidates were all the matches (the count row)."""
    passed = sorted((row for row in rows if row[0] is not None), key=lambda row: row[2], reverse=True)
    ranked_count = next(row[2] for row in rows if row[0] is None)
    return passed, ranked_count < candidates


def _backend():
    return _PostgreSQL() if db.session.get_bind().dialect.name == "postgresql" else _SQLite()
