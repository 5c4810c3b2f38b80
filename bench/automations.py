"""``python -m bench.automations``: automations over many contacts (see bench/README.md, "Automations").

Per database (a fresh SQLite file or PostgreSQL database, migrated like a real
instance, with a private redis-server for the runs' locks):

* ``--contacts`` contacts (default 20,000), every one written to from one
  connected inbox, half of them having answered (stored ``mail_message`` and
  ``reply_condition_response`` rows, as reply_condition's matcher leaves them);
* **evaluation**: a run-by-hand rule "IMAP email: has not responded" evaluated
  over all contacts (``matching_contacts``, what a run and its preview call),
  median of ``--runs``;
* **whole run**: the same rule with the action "add tag needs-follow-up", run
  as the RQ job runs it (``bulk_runs.run_bulk_job``): the audience, the
  evaluation, the actions and the run log for every matching contact;
* **due waits**: ``--waits`` contacts (default 10,000) e-mailed at once
  (``email_sent``), an automation "wait 3 days; if IMAP email: not responded
  since that e-mail, add tag" starts a wait for each, and all come due at
  once: ``waits.process_due_waits`` (the scheduler's job) checks and acts on
  them.

Each database runs in a child process of its own (the app and its engine are
built once per process). Results: ``bench/results/automations-<database>.json``
and a Markdown table on stdout and in ``automations-latest.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .databases import BACKENDS, DEFAULT_PG_URL, app_config, fresh_database, postgres_reachable
from .redis_server import private_redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
TARGETS = {"evaluation_seconds": 1.0, "run_seconds": 5.0, "due_waits_seconds": 10.0}
TAG = "needs-follow-up"
INSERT_CHUNK = 5000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.automations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=20000)
    parser.add_argument("--waits", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5, help="timed evaluations (the median is reported)")
    parser.add_argument("--db", default=",".join(BACKENDS), help="sqlite, postgresql or both (default)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure one database, write JSON here
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- the data


def populate(contacts: int) -> dict:
    """Contacts, one inbox with our e-mail to each, and a stored response from every second contact."""
    import sqlalchemy as sa

    from host_app.auth import create_agent
    from host_app.extensions import db
    from host_app.models import Contact
    from plugins.mail.models import Folder, Inbox, Message
    from plugins.reply_condition.models import Response

    started = time.perf_counter()
    agent = create_agent("agent@team.example", "Bench Agent", "bench-agent-password")
    # Core inserts: the ORM classes are polymorphic on ``transport``, whose subclasses belong to imap_inbox.
    inbox_email = "sales@team.example"
    inbox_id = db.session.execute(sa.insert(Inbox).returning(Inbox.id).values(
        transport="imap", name="Bench inbox", email=inbox_email, username=inbox_email, owner_id=agent.id,
        status="ok")).scalar_one()
    sent_id, received_id = (db.session.execute(sa.insert(Folder).returning(Folder.id).values(
        transport="imap", inbox_id=inbox_id, name=name, role=role)).scalar_one()
        for name, role in (("Sent", "sent"), ("INBOX", "inbox")))
    db.session.commit()
    now = datetime.now(UTC).replace(microsecond=0)
    emails = [f"contact{i:06d}@client{i % 97}.example" for i in range(contacts)]
    for start in range(0, contacts, INSERT_CHUNK):
        chunk = emails[start:start + INSERT_CHUNK]
        db.session.execute(sa.insert(Contact), [{"email": e, "name": e.split("@")[0], "created_at": now}
                                                for e in chunk])
        ours = db.session.execute(sa.insert(Message).returning(Message.id, Message.message_id), [
            {"inbox_id": inbox_id, "folder_id": sent_id, "uid": start + n + 1, "message_id": f"offer{start + n}@team",
             "dedup_key": f"offer{start + n}@team", "direction": "out", "subject": "Offer",
             "from_email": inbox_email, "date": now - timedelta(days=10)} for n in range(len(chunk))
        ]).all()
        our_pk = dict((mid, pk) for pk, mid in ours)
        answered = [n for n in range(len(chunk)) if (start + n) % 2 == 0]
        replies = db.session.execute(sa.insert(Message).returning(Message.id, Message.in_reply_to), [
            {"inbox_id": inbox_id, "folder_id": received_id, "uid": start + n + 1,
             "message_id": f"re{start + n}@client", "dedup_key": f"re{start + n}@client", "direction": "in",
             "subject": "Re: Offer", "from_email": chunk[n], "date": now - timedelta(days=9),
             "in_reply_to": f"offer{start + n}@team"} for n in answered
        ]).all()
        db.session.execute(sa.insert(Response), [
            {"reply_pk": pk, "our_pk": our_pk[in_reply_to], "contact_email": emails[int(in_reply_to[5:-5])],
             "our_inbox_id": inbox_id, "sent_at": now - timedelta(days=10), "replied_at": now - timedelta(days=9),
             "delay_seconds": 86400, "matched_by": "header", "created_at": now}
            for pk, in_reply_to in replies
        ])
        db.session.commit()
    return {"contacts": contacts, "responded": (contacts + 1) // 2, "seconds": time.perf_counter() - started}


def add_rule(name: str, trigger: str, wait_seconds: int = 0, after_trigger: bool = False):
    from host_app.extensions import db
    from host_app.models import AutomationRule

    rule = AutomationRule(
        name=name, trigger=trigger, match="all", wait_seconds=wait_seconds,
        conditions=[{"key": "imap_email", "params": {"responded": False, "within_days": None, "inbox_id": None,
                                                     "after_trigger": after_trigger}}],
        actions=[{"key": "add_tag", "params": {"tag": TAG}}],
    )
    db.session.add(rule)
    db.session.commit()
    return rule


def tagged() -> int:
    from host_app.extensions import db

    return db.session.scalar(db.text("SELECT count(*) FROM contact_tag WHERE tag = :tag"), {"tag": TAG})


def untag() -> None:
    from host_app.extensions import db

    db.session.execute(db.text("DELETE FROM contact_tag WHERE tag = :tag"), {"tag": TAG})
    db.session.commit()


# --------------------------------------------------------------------------- the phases


class CpuClock:
    """CPU seconds of this process and of the database's server processes (PostgreSQL backends, from /proc).

    Wall times on a shared two-core machine move with everybody else's load; the CPU the work costs does
    not, so each phase reports both. SQLite runs inside this process, so its CPU is in ``cpu_seconds``.
    """

    def __init__(self) -> None:
        self.process, self.server = time.process_time(), self._server()

    @staticmethod
    def _server() -> float:
        from host_app.extensions import db

        if db.engine.dialect.name != "postgresql":
            return 0.0
        pids = db.session.scalars(db.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # another machine, or the backend is gone: counted as nothing
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def read(self) -> dict:
        return {"cpu_seconds": time.process_time() - self.process,
                "db_server_cpu_seconds": self._server() - self.server}


def evaluation(rule, runs: int) -> dict:
    """The rule's conditions over all contacts, as a run and its preview evaluate them."""
    import sqlalchemy as sa

    from host_app.automation_engine import matching_contacts
    from host_app.extensions import db
    from host_app.models import Contact

    ids = set(db.session.scalars(sa.select(Contact.id)))
    matching_contacts(rule, ids)  # warm-up: the plugins' condition objects, the statement caches
    times, matched = [], set()
    clock = CpuClock()
    for _ in range(runs):
        started = time.perf_counter()
        matched = matching_contacts(rule, ids)
        times.append(time.perf_counter() - started)
    cpu = {key: value / runs for key, value in clock.read().items()}  # per evaluation
    return {"contacts": len(ids), "matched": len(matched), "median_seconds": statistics.median(times),
            "max_seconds": max(times), "runs": runs, **cpu}


def whole_run(rule) -> dict:
    """A run by hand over all contacts, as the RQ worker runs it: evaluate, tag, log."""
    from host_app import bulk_runs
    from host_app.extensions import db

    run = bulk_runs.create(rule, "all:", origin="hand")
    run_id = run.id
    db.session.expire_all()
    clock, started = CpuClock(), time.perf_counter()
    result = bulk_runs.run_bulk_job(run_id)
    seconds = time.perf_counter() - started
    return {"status": result["status"], "evaluated": result["evaluated"], "matched": result["matched"],
            "acted": result["acted"], "tagged": tagged(), "seconds": seconds, **clock.read()}


def due_waits(waits: int) -> dict:
    """``waits`` contacts e-mailed at once start a 3-day wait each; then all of them come due at once."""
    import sqlalchemy as sa

    from host_app.events import emit
    from host_app.extensions import db
    from host_app.models import AutomationWait, Contact
    from host_app.waits import process_due_waits

    add_rule("Follow up after 3 days", "email_sent", wait_seconds=3 * 86400, after_trigger=True)
    ids = list(db.session.scalars(sa.select(Contact.id).order_by(Contact.id).limit(waits)))
    sent_at = (datetime.now(UTC) - timedelta(days=9, hours=12)).isoformat()  # after the replies of the data
    started = time.perf_counter()
    emit("email_sent", key="bench-batch", contact_ids=ids, payload={"occurred_at": sent_at})
    start_seconds = time.perf_counter() - started
    pending = db.session.scalar(sa.select(sa.func.count(AutomationWait.id)))
    db.session.expire_all()
    started = time.perf_counter()
    assert process_due_waits(now=datetime.now(UTC)) == {}  # none due: what every minute's tick costs meanwhile
    idle_seconds = time.perf_counter() - started
    clock, started = CpuClock(), time.perf_counter()
    counts = process_due_waits(now=datetime.now(UTC) + timedelta(days=4))
    seconds = time.perf_counter() - started
    return {"waits": pending, "counts": counts, "tagged": tagged(), "start_seconds": start_seconds,
            "idle_tick_seconds": idle_seconds, "seconds": seconds, **clock.read(),
            "left": db.session.scalar(sa.select(sa.func.count(AutomationWait.id)))}


def measure(database_url: str, redis_url: str, contacts: int, waits: int, runs: int) -> dict:
    """Everything for one database (in this process)."""
    from host_app import create_app, migrating
    from host_app.extensions import db

    with tempfile.TemporaryDirectory(prefix="bench-automations-") as instance:
        app = create_app(app_config(database_url, Path(instance), redis_url, queue="bench-automations"))
        with app.app_context():
            migrating.upgrade(app)
            result = {"database": db.engine.dialect.name, "data": populate(contacts)}
            rule = add_rule("Follow up leads", "manual")
            result["evaluation"] = evaluation(rule, runs)
            result["run"] = whole_run(rule)
            untag()
            result["due_waits"] = due_waits(min(waits, contacts))
            db.session.remove()
            db.engine.dispose()
    return result


# --------------------------------------------------------------------------- the report


def verdicts(result: dict) -> dict[str, tuple[float, float, bool]]:
    measured = {"evaluation_seconds": result["evaluation"]["median_seconds"],
                "run_seconds": result["run"]["seconds"], "due_waits_seconds": result["due_waits"]["seconds"]}
    return {key: (value, TARGETS[key], value <= TARGETS[key]) for key, value in measured.items()}


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    names = [r["database"] for r in results]
    lines = [f"Automations: {args.contacts:,} contacts, {args.waits:,} waits; load average "
             f"{os.getloadavg()[0]:.1f} at the end", "",
             "| target | goal | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    rows = (("evaluation_seconds", "bulk `imap_email` evaluation, median", "≤ 1 s"),
            ("run_seconds", "whole run with a tag action", "≤ 5 s"),
            ("due_waits_seconds", "due waits processed at once", "≤ 10 s"))
    for key, label, goal in rows:
        cells = []
        for r in results:
            value, _, met = verdicts(r)[key]
            cells.append(f"{value:.2f} s{'' if met else ' (missed)'}")
        lines.append(f"| {label} | {goal} | " + " | ".join(cells) + " |")
    for key, phase in (("evaluation", "evaluation"), ("run", "whole run"), ("due_waits", "due waits")):
        lines.append(f"| … CPU of the {phase}: ours + database server | | " + " | ".join(
            f"{r[key]['cpu_seconds']:.2f} + {r[key]['db_server_cpu_seconds']:.2f} s" for r in results) + " |")
    lines.append("| … matched / acted / tagged | | " + " | ".join(
        f"{r['run']['matched']:,} / {r['run']['acted']:,} / {r['run']['tagged']:,}" for r in results) + " |")
    lines.append("| … waits: outcomes | | " + " | ".join(
        ", ".join(f"{k} {v:,}" for k, v in sorted(r['due_waits']['counts'].items())) for r in results) + " |")
    lines.append("| … starting the waits (one event) | | " + " | ".join(
        f"{r['due_waits']['start_seconds']:.2f} s" for r in results) + " |")
    lines.append("| … a tick with none due | | " + " | ".join(
        f"{r['due_waits']['idle_tick_seconds'] * 1000:.1f} ms" for r in results) + " |")
    return "\n".join(lines) + "\n"


def run_child(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    with fresh_database(backend, workdir, args.pg_url) as url, private_redis() as redis_url:
        if redis_url is None:
            raise SystemExit("redis-server is not installed (make system-packages installs it)")
        out = workdir / f"{backend}.json"
        subprocess.run([sys.executable, "-m", "bench.automations", "--child", str(out), "--database-url", url,
                        "--redis-url", redis_url, "--contacts", str(args.contacts), "--waits", str(args.waits),
                        "--runs", str(args.runs)], cwd=ROOT, check=True)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = measure(args.database_url, args.redis_url, args.contacts, args.waits, args.runs)
        Path(args.child).write_text(json.dumps(result, indent=2, default=str))
        return 0
    backends = [b.strip() for b in args.db.split(",") if b.strip()]
    if "postgresql" in backends and not postgres_reachable(args.pg_url):
        raise SystemExit(f"PostgreSQL is not reachable at {args.pg_url} (use --db sqlite, or --pg-url)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-automations-") as tmp:
        for backend in backends:
            print(f"automations on {backend}: {args.contacts:,} contacts ...", flush=True)
            result = run_child(backend, args, Path(tmp))
            results.append(result)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"automations-{backend}.json").write_text(json.dumps(result, indent=2, default=str))
    report = markdown(results, args)
    (args.out / "automations-latest.md").write_text(report)
    print(report)
    missed = [f"{r['database']} {key}" for r in results for key, (_, _, met) in verdicts(r).items() if not met]
    if missed:
        print("missed: " + ", ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
