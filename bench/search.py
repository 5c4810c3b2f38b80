"""``python -m bench.search --messages 100000``: full-text search of stored e-mails, p50/p95 per kind of query.

Stores ``--messages`` e-mails through the sync's own write path
(``plugins.mail.store.insert_messages``, so the database's index is kept in
step as during a sync) with subjects and text drawn from a Zipf-distributed
vocabulary of 30,000 words plus order numbers, 2,000 correspondents who are
all contacts (a tenth of the mail is ours to them, the rest theirs), then
times ``plugins.mail.search.search_messages`` (rank, highlight, the page's
rows) and ``contact_ids_matching`` (the contacts list's search), each query
kind ``--queries`` times after warm-up. No mail server is needed: search
reads only the database. See bench/README.md for the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .databases import BACKENDS, DEFAULT_PG_URL, app_config, fresh_database, postgres_reachable

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VOCABULARY = 30_000
CONTACTS = 2_000
BATCH = 5_000
TARGET_P95_MS = 100.0
BEFORE_SEARCH = "b382522dd026"  # the mail core's revision before the search index
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ber", "dan", "fen", "gor", "hal", "jor", "kel",
              "lun", "mar", "nor", "pel", "quin", "ros", "stel", "tam", "ul", "wen", "zor", "ent", "ost", "ix")


def vocabulary(rng: random.Random) -> list[str]:
    """Made-up words (no English stem can merge two of them), most frequent first."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Text:
    """Zipf-distributed words (s = 1.07, as in natural language)."""

    def __init__(self, rng: random.Random, words: list[str]) -> None:
        self.rng = rng
        self.words = words
        weights = [1 / (rank + 1) ** 1.07 for rank in range(len(words))]
        total = sum(weights)
        self.cumulative = []
        running = 0.0
        for weight in weights:
            running += weight / total
            self.cumulative.append(running)

    def words_(self, count: int) -> list[str]:
        return [self.words[min(i, len(self.words) - 1)]
                for i in (self._index(self.rng.random()) for _ in range(count))]

    def _index(self, x: float) -> int:
        lo, hi = 0, len(self.cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cumulative[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return lo


def build_rows(n: int, inbox_id: int, folders: dict[str, int], text: Text, rng: random.Random,
               correspondents: list[str]):
    """(message rows, address rows) in batches, as a sync would hand them to the store."""
    start = datetime(2023, 1, 1, tzinfo=UTC)
    uids = {"in": 0, "out": 0}
    for offset in range(0, n, BATCH):
        rows, addresses = [], []
        for i in range(offset, min(n, offset + BATCH)):
            direction = "out" if i % 10 == 0 else "in"
            uids[direction] += 1
            # One big correspondent (5% of the mail, as the sync bench's timeline contact), the rest spread.
            big = rng.random() < 0.05
            other = correspondents[0 if big else 1 + min(int(rng.expovariate(1 / 300)), len(correspondents) - 2)]
            date = start + timedelta(minutes=7 * i)
            subject = " ".join(text.words_(rng.randint(3, 8)))
            if i % 7 == 0:
                subject += f" order {100000 + i}"
            preview = " ".join(text.words_(rng.randint(20, 32)))  # a preview: up to 200 characters
            sender, recipient = ("team@team.example", other) if direction == "out" else (other, "team@team.example")
            rows.append({
                "inbox_id": inbox_id, "folder_id": folders[direction], "uid": uids[direction],
                "message_id": f"m{i}@bench.example", "dedup_key": f"m{i}@bench.example",
                "direction": direction, "subject": subject, "from_email": sender, "from_name": "",
                "date": date, "internal_date": date, "size": 4000, "flags": "\\Seen", "in_reply_to": None,
                "references": None, "auto_submitted": None, "precedence": None, "list_id": None,
                "list_unsubscribe": False, "x_autoreply": False, "content_type": "text/plain",
                "automated": False, "preview": preview[:200], "parse_error": None, "created_at": date,
            })
            addresses.append([
                {"role": "from", "email": sender, "name": "", "inbox_id": inbox_id, "date": date},
                {"role": "to", "email": recipient, "name": "", "inbox_id": inbox_id, "date": date},
            ])
        yield rows, addresses


def queries(words: list[str], rng: random.Random, n: int, count: int) -> dict[str, list[str]]:
    """Query kinds by how much mail they match. The 20 most frequent words stand for the stop words ("the",
    "and" ...), which no search looks for (search.STOP_WORDS): each is in 40-97% of the messages."""
    def pick(low, high):
        return words[rng.randrange(low, high)]
    return {
        "frequent word (rank 21-60, in 5-12% of mail)": [pick(20, 60) for _ in range(count)],
        "common word (rank 100-1,000, in 0.3-2.5%)": [pick(100, 1000) for _ in range(count)],
        "rare word (rank 5,000+)": [pick(5000, len(words)) for _ in range(count)],
        "two words (frequent + common)": [f"{pick(20, 60)} {pick(100, 1000)}" for _ in range(count)],
        "order number": [f"order {100000 + 7 * rng.randrange(n // 7)}" for _ in range(count)],
    }


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "runs": len(ordered)}


def _fill(messages: int, seed: int) -> tuple[list[str], list[str], float]:
    """Store the bench's mail in the app's database; (vocabulary, correspondents, seconds storing)."""
    from host_app.api import Contact, db
    from plugins.mail import store
    from plugins.mail.models import ROLE_INBOX, ROLE_SENT, Folder, Inbox

    rng = random.Random(seed)
    words = vocabulary(rng)
    text = Text(rng, words)
    correspondents = [f"person{i}@customer{i % 97}.example" for i in range(CONTACTS)]
    inbox = Inbox(name="Bench", email="team@team.example", username="team@team.example")
    inbox.folders = [Folder(name="INBOX", role=ROLE_INBOX), Folder(name="Sent", role=ROLE_SENT)]
    db.session.add(inbox)
    db.session.add_all(Contact(email=email, name=f"Person {i}") for i, email in enumerate(correspondents))
    db.session.commit()
    folders = {"in": inbox.folders[0].id, "out": inbox.folders[1].id}
    seconds = 0.0
    for rows, addresses in build_rows(messages, inbox.id, folders, text, rng, correspondents):
        began = time.perf_counter()
        for direction in ("in", "out"):  # the store takes one folder's messages at a time
            mine = [i for i, row in enumerate(rows) if row["direction"] == direction]
            store.insert_messages([rows[i] for i in mine], [addresses[i] for i in mine])
        db.session.commit()
        seconds += time.perf_counter() - began
    return words, correspondents, seconds


def _app(url: str, workdir: Path, with_index: bool = True):
    from host_app import create_app, migrating
    from plugins.mail import store

    app = create_app(app_config(url, workdir / "instance", "redis://127.0.0.1:6379/15"))
    migrating.upgrade(app)
    if not with_index:
        migrating.downgrade(app, "mail", BEFORE_SEARCH)
    # The store fills SQLite's index per batch itself (migration e3b9d7f1a5c2); without the index, it must not.
    store.index_search_per_batch = with_index
    return app


def insert_overhead(backend: str, messages: int, rounds: int, pg_url: str, seed: int, workdir: Path) -> dict:
    """What keeping the index costs the sync's writes: ``store.insert_messages`` with the index and without
    (the mail core's migrations before it), in turn, each on a fresh database; the median of the ratios."""
    from host_app.api import db

    pairs = []
    for _ in range(rounds):
        pair = {}
        for with_index in (False, True):
            with fresh_database(backend, workdir, pg_url) as url:
                app = _app(url, workdir, with_index)
                with app.app_context():
                    pair[with_index] = _fill(messages, seed)[2]
                    db.session.remove()
                    db.engine.dispose()
        pairs.append(pair)
    ratios = sorted(pair[True] / pair[False] for pair in pairs)
    return {"messages": messages, "rounds": rounds,
            "seconds_without_index": [round(p[False], 2) for p in pairs],
            "seconds_with_index": [round(p[True], 2) for p in pairs],
            "ratio_median": round(statistics.median(ratios), 3)}


def run(backend: str, messages: int, count: int, pg_url: str, seed: int, workdir: Path) -> dict:
    from host_app.api import Contact, db
    from plugins.mail import search

    rng = random.Random(seed + 1)
    with fresh_database(backend, workdir, pg_url) as url:
        app = _app(url, workdir)
        with app.app_context():
            words, correspondents, insert_seconds = _fill(messages, seed)
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE" if backend == "postgresql" else "ANALYZE")
            contact = db.session.scalar(db.select(Contact).where(Contact.email == correspondents[0]))
            results: dict = {"database": backend, "messages": messages, "insert_seconds": round(insert_seconds, 2),
                             "insert_messages_per_second": round(messages / insert_seconds),
                             "load_average": os.getloadavg()[0], "kinds": {}}
            every: list[float] = []
            for kind, texts in queries(words, rng, messages, count).items():
                for label, call in (
                    ("all contacts", lambda q: search.search_messages(q)),
                    ("one contact (5% of the mail)", lambda q: search.search_messages(q, contact=contact)),
                    ("contacts list", lambda q: search.contact_ids_matching(q)),
                ):
                    for q in texts[:3]:  # warm-up
                        call(q)
                    samples, found = [], []
                    for q in texts:
                        began = time.perf_counter()
                        answer = call(q)
                        samples.append(time.perf_counter() - began)
                        found.append(len(answer))
                        db.session.rollback()  # each query in its own transaction, as each request
                    if label != "contacts list":
                        every.extend(samples)
                    results["kinds"][f"{kind}, {label}"] = {**_percentiles(samples),
                                                            "median_results": statistics.median(found)}
            results["message_search"] = _percentiles(every)
            results["load_average_after"] = os.getloadavg()[0]
            db.session.remove()
            db.engine.dispose()
    return results


def markdown(result: dict) -> str:
    lines = [f"### Search, {result['messages']:,} messages, {result['database']}", "",
             f"Stored through `store.insert_messages` at {result['insert_messages_per_second']:,} msg/s "
             f"(index kept in step). All e-mail searches: p50 {result['message_search']['p50_ms']} ms, "
             f"p95 {result['message_search']['p95_ms']} ms (target p95 ≤ {TARGET_P95_MS:.0f} ms). "
             f"Load average {result['load_average']:.1f} before the queries, "
             f"{result['load_average_after']:.1f} after.", "",
             "| query | p50 ms | p95 ms | max ms | results (median) |", "|---|---:|---:|---:|---:|"]
    for kind, row in result["kinds"].items():
        lines.append(f"| {kind} | {row['p50_ms']} | {row['p95_ms']} | {row['max_ms']} | {row['median_results']} |")
    overhead = result.get("insert_overhead")
    if overhead:
        lines += ["", f"Keeping the index: `store.insert_messages` of {overhead['messages']:,} messages took "
                      f"{overhead['seconds_with_index']} s with it and {overhead['seconds_without_index']} s "
                      f"without (in turn, fresh databases): median ratio {overhead['ratio_median']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=40, help="timed queries per kind (after 3 warm-up)")
    parser.add_argument("--db", default=",".join(BACKENDS))
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--overhead-messages", type=int, default=20_000,
                        help="messages stored with and without the index to measure its cost (0: skip)")
    parser.add_argument("--overhead-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for backend in args.db.split(","):
        if backend == "postgresql" and not postgres_reachable(args.pg_url):
            print(f"PostgreSQL at {args.pg_url} is not reachable: skipped", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(prefix="bench-search-") as workdir:
            result = run(backend, args.messages, args.queries, args.pg_url, args.seed, Path(workdir))
            if args.overhead_messages:
                result["insert_overhead"] = insert_overhead(backend, args.overhead_messages, args.overhead_rounds,
                                                            args.pg_url, args.seed, Path(workdir))
        stem = args.out / f"search-{args.messages}-{backend}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
        failed |= result["message_search"]["p95_ms"] > TARGET_P95_MS
    if failed:
        print(f"p95 above the {TARGET_P95_MS:.0f} ms target", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
