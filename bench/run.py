"""``python -m bench``: build the mailbox, run every phase on every database, write the results."""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .child import PHASE_TIMEOUT, PhaseFailed, PhaseTimeout, py_spy, run_phase
from .databases import BACKENDS, DEFAULT_PG_URL, app_config, fresh_database, postgres_reachable
from .mailbox import (
    OWNER,
    SENT_FOLDER,
    TIMELINE_CONTACT,
    TIMELINE_CONTACT_NAME,
    add_new_mail,
    build_mailbox,
    drop_server_cache,
)
from .redis_server import private_redis
from .server_cpu import dovecot_cpu_seconds
from .wire import PEER_ITEMS, fetch_items, uid_next, warm_fetch_cache

PHASES = ("wire", "peer", "sync", "noop", "incremental", "import", "timeline", "condition")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAILBOX_PASSWORD = "bench-mailbox-password"
AGENT_EMAIL = "agent@team.example"
AGENT_PASSWORD = "bench-agent-password"
PREVIEW_MODE = "server"  # the engine's default IMAP_PREVIEW


def default_base_dir() -> str | None:
    """tmpfs when available: writing and removing 100k+ Maildir files on disk takes minutes, not seconds."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="INBOX messages (Sent gets N/10); default 2000")
    parser.add_argument("--db", default="sqlite,postgresql",
                        help="comma-separated databases: sqlite, postgresql (default both; PostgreSQL is "
                             "skipped with a note when not reachable)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help="PostgreSQL server URL; a bench database is created there and dropped")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"),
                        help="Redis for the sync's locks (default: a private redis-server started for the run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the result files go")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {', '.join(PHASES)} (sync always runs when a later "
                             "database phase needs it)")
    parser.add_argument("--noop-runs", type=int, default=9)
    parser.add_argument("--timeline-requests", type=int, default=50)
    parser.add_argument("--new-messages", type=int, default=1000)
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory: run the sync phases under py-spy and keep collapsed stacks there")
    parser.add_argument("--trace-memory", type=Path, default=None,
                        help="directory: trace the initial sync's Python heap (tracemalloc; slow, so not for "
                             "timings) and write where it goes at its largest, per database")
    parser.add_argument("--phase-timeout", type=float, default=PHASE_TIMEOUT,
                        help="seconds a phase may run before it is stopped and reported as unfinished")
    parser.add_argument("--sync-timeout", type=float, default=None,
                        help="seconds the initial sync may run (default: --phase-timeout); when stopped, the "
                             "report shows how far it got")
    parser.add_argument("--sqlite-pragma", action="append", default=[], metavar="PRAGMA",
                        help="experiment: run 'PRAGMA <this>' on every SQLite connection (repeatable), e.g. "
                             "journal_mode=WAL, synchronous=NORMAL, cache_size=-65536")
    parser.add_argument("--cold-cache", action="store_true",
                        help="skip warming Dovecot's cache for the sync's FETCH items (scaling/RSS runs only; "
                             "the targets are stated for a warm cache)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases (SQLite files, PostgreSQL database) for inspection")
    parser.add_argument("--base-dir", default=default_base_dir(),
                        help="parent folder of the throwaway Dovecot (default /dev/shm when there, else /tmp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 10:
        parser.error("--n must be at least 10")
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    unknown = set(args.db) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown database(s) {', '.join(sorted(unknown))}; use {', '.join(BACKENDS)}")
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; use {', '.join(PHASES)}")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _command_output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _meta(args: argparse.Namespace) -> dict:
    dovecot = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/bin")
    commit = _command_output("git", "rev-parse", "--short", "HEAD")
    if _command_output("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "n": args.n,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit or "unknown",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "dovecot": f"Dovecot {_command_output(dovecot, '--version')}" if dovecot else "Dovecot ?",
        },
        "phases": args.phases,
        "sqlite_pragmas": args.sqlite_pragma,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class Bench:
    """One benchmark run: the shared mailbox, then each phase on each database."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.results: dict = {"meta": _meta(args), "databases": {}, "notes": []}
        self.configs: dict[str, dict] = {}
        self.inbox_ids: dict[str, int] = {}
        self.server = None  # the running DovecotServer

    def note(self, text: str) -> None:
        log(f"note: {text}")
        self.results["notes"].append(text)

    def phase(self, name: str, database: str | None = None, profile: bool = False, timeout: float | None = None,
              **kwargs) -> dict | None:
        """Run one phase in a child; failures become a note and an ``error`` entry, never an abort."""
        label = f"{name}" + (f" [{database}]" if database else "")
        log(f"{label} ...")
        config = self.configs[database] if database else None
        profile_path = None
        if profile and self.args.profile:
            profile_path = self.args.profile / f"n{self.args.n}-{database}-{name}"
        server_cpu = self.server_cpu()
        try:
            result = run_phase(name, app_config=config, profile=profile_path,
                               timeout=timeout or self.args.phase_timeout, **kwargs)
        except PhaseTimeout as exc:
            where = next((w for _, w in reversed(exc.marks) if not w.startswith("rss-at ")), "unknown")
            self.note(f"{label} {exc.summary}; it was at: {where}")
            first_reached: dict[str, float] = {}
            rss_by_progress = []
            for t, what in exc.marks:
                if what.startswith("rss-at "):
                    done, rss = what.split()[1:3]
                    rss_by_progress.append((int(done), float(rss)))
                else:
                    first_reached.setdefault(what, t)
            return {"error": exc.summary, "timed_out": True, "timeout_seconds": exc.seconds,
                    "marks": first_reached, "last_mark": where, "rss_mb_by_messages_stored": rss_by_progress}
        except PhaseFailed as exc:
            self.note(f"{label} failed: {exc.summary}")
            return {"error": exc.summary, "stderr": exc.stderr}
        log(f"{label} done in {result['process_seconds']:.1f} s")
        if server_cpu is not None and (after := self.server_cpu()) is not None:
            result["server_cpu_seconds"] = round(after - server_cpu, 2)
        return result

    def check_sync(self, database: str, name: str, result: dict | None) -> dict | None:
        """A sync that did not end "ok" makes its numbers meaningless: say so next to them."""
        summary = (result or {}).get("summary") or (result or {}).get("last_summary") or {}
        if summary and summary.get("status") != "ok":
            self.note(f"{database}: {name} ended with status {summary.get('status')!r}: "
                      f"{summary.get('error', '')} {summary.get('hint', '')}".strip())
        return result

    def server_cpu(self) -> float | None:
        return dovecot_cpu_seconds(self.server.conf_path) if self.server is not None else None

    def store(self, database: str, key: str, value: dict | None) -> None:
        if value is not None:
            self.results["databases"].setdefault(database, {})[key] = value

    def imap_kwargs(self, server) -> dict:
        return {"host": server.host, "port": server.imaps_port, "ca_file": server.ca_file,
                "username": OWNER, "password": MAILBOX_PASSWORD}

    def run(self) -> dict:
        from plugins.imap_inbox.testing.dovecot import DovecotServer

        args, phases = self.args, set(self.args.phases)
        started = time.perf_counter()
        with DovecotServer(args.base_dir) as server, contextlib.ExitStack() as stack:
            if not args.redis_url:
                args.redis_url = stack.enter_context(private_redis()) or "redis://127.0.0.1:6379/11"
            self.server = server
            server.add_user(OWNER, MAILBOX_PASSWORD)
            log(f"building the mailbox: {args.n:,} INBOX + {args.n // 10:,} Sent messages")
            facts = build_mailbox(server, OWNER, args.n, seed=args.seed)
            self.results["mailbox"] = {**vars(facts), "total": facts.total}
            log(f"mailbox built in {facts.build_seconds:.1f} s, warmed in {facts.warm_seconds:.1f} s")
            imap = self.imap_kwargs(server)
            with server.client(OWNER) as client:
                items, source = fetch_items(client, PREVIEW_MODE)
            self.results["meta"].update(fetch_items=items, fetch_items_source=source)
            folders = ["INBOX", SENT_FOLDER]
            if args.cold_cache:
                self.note("Dovecot's cache was NOT warmed for the sync's FETCH items (--cold-cache)")
            else:
                if "sync" in phases:
                    self.results["cold_first_sync"] = self.cold_first_sync(stack, imap, args.db[0])
                    # Its FETCH filled Dovecot's cache: empty it, so the warm-up below is a cold pass again
                    # (the cold wire limit the cold first sync is compared with).
                    if not drop_server_cache(server, OWNER):
                        self.note("no Dovecot cache file found to drop: the warm-up ran on a warm cache")
                self.results["mailbox"]["cache_warm_seconds"] = warm_fetch_cache(**imap, folders=folders,
                                                                                 items=items)
                log(f"Dovecot's cache warmed for the sync's FETCH items in "
                    f"{self.results['mailbox']['cache_warm_seconds']:.1f} s")
            if "wire" in phases:
                self.results["wire"] = self.phase("wire", **imap, folders=folders, items=items)
                # imap-tools asks for other items, which Dovecot has not cached yet: two passes, the last counts.
                self.results["wire_peer_items"] = self.phase("wire", **imap, folders=folders, items=PEER_ITEMS,
                                                             passes=2)
            if "wire" in phases or "noop" in phases:
                self.results["noop_floor"] = self.phase("noop_floor", **imap, folders=folders)
            if "peer" in phases:
                self.results["peer"] = self.phase("peer", **imap, folders=folders)
                if self.results["peer"].get("note"):
                    self.note(self.results["peer"]["note"])

            databases = self.open_databases(stack)
            for database in databases:
                setup = self.phase("setup", database, **imap, agent_email=AGENT_EMAIL,
                                   agent_password=AGENT_PASSWORD)
                self.store(database, "setup", setup)
                if setup and setup.get("inbox_id"):
                    self.inbox_ids[database] = setup["inbox_id"]
                elif setup and setup.get("note"):
                    self.note(f"{database}: {setup['note']}")
            synced = [d for d in databases if d in self.inbox_ids]
            needs_sync = phases & {"sync", "noop", "incremental", "import", "timeline", "condition"}
            if needs_sync:
                for database in synced:
                    self.store(database, "initial_sync",
                               self.check_sync(database, "initial sync", self.initial_sync(database)))
            unfinished = [d for d in synced if self.results["databases"][d]["initial_sync"].get("timed_out")]
            for database in unfinished:
                self.note(f"{database}: no-op and incremental syncs skipped (the initial sync did not finish)")
            synced = [d for d in synced if d not in unfinished]
            if "noop" in phases:
                for database in synced:
                    self.store(database, "noop_sync", self.check_sync(database, "no-op sync", self.phase(
                        "noop_sync", database, profile=True, inbox_id=self.inbox_ids[database],
                        runs=args.noop_runs)))
            if "noop" in phases and synced:
                # The same floor again, now that the sync has EXAMINEd and FETCHed: did the server's state change?
                self.results["noop_floor_after_sync"] = self.phase("noop_floor", **imap, folders=folders)
            if "incremental" in phases and synced:
                log(f"adding {args.new_messages:,} new messages")
                before = uid_next(**imap, folders=folders)
                new = add_new_mail(server, OWNER, args.new_messages, seed=args.seed + 1)
                if not args.cold_cache:
                    new.cache_warm_seconds = warm_fetch_cache(**imap, folders=folders, items=items,
                                                              from_uids=before)
                self.results["new_mail"] = vars(new)
                for database in synced:
                    self.store(database, "incremental_sync", self.check_sync(
                        database, "incremental sync",
                        self.phase("incremental_sync", database, profile=True, inbox_id=self.inbox_ids[database])))
            for database in databases:
                if "import" in phases:
                    if database in self.inbox_ids:
                        self.store(database, "contacts_import", self.phase(
                            "contacts_import", database, profile=True, inbox_id=self.inbox_ids[database]))
                    else:
                        self.store(database, "contacts_import", {"available": False, "note": "no synced inbox"})
                if "timeline" in phases:
                    self.store(database, "timeline", self.phase(
                        "timeline", database, contact_email=TIMELINE_CONTACT, contact_name=TIMELINE_CONTACT_NAME,
                        agent_email=AGENT_EMAIL, agent_password=AGENT_PASSWORD,
                        requests=args.timeline_requests))
                if "condition" in phases:
                    self.store(database, "condition", self.phase("condition", database, profile=True))
        for database in self.results["databases"]:
            data = self.results["databases"][database]
            data["ratios"] = report.ratios(self.results, database)
            data["targets"] = report.evaluate_targets(self.results, database)
        self.results["meta"]["wall_seconds"] = time.perf_counter() - started
        self.results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return self.results

    def initial_sync(self, database: str) -> dict:
        """The initial sync; when stopped, how far it got (what is stored, and which step was running)."""
        traced = {}
        if self.args.trace_memory:
            self.args.trace_memory.mkdir(parents=True, exist_ok=True)
            traced["trace_memory"] = str(self.args.trace_memory / f"n{self.args.n}-{database}-initial_sync.txt")
            self.note(f"{database}: the initial sync ran under tracemalloc ({traced['trace_memory']}): its "
                      "timings are slower than untraced")
        result = self.phase("initial_sync", database, profile=True, timeout=self.args.sync_timeout,
                            inbox_id=self.inbox_ids[database], **traced)
        if not result.get("timed_out"):
            return result
        progress = self.phase("sync_progress", database, inbox_id=self.inbox_ids[database]) or {}
        own = ("error", "process_seconds", "cpu_seconds", "peak_rss_mb", "rss_before_mb", "server_cpu_seconds")
        result.update({k: v for k, v in progress.items() if k not in own})
        marks = result["marks"]  # step -> seconds when it was first reached
        started = marks.get("sync started", 0.0)
        listeners = [t for what, t in marks.items() if what.startswith("listener mailbox_synced:")]
        stored = result.get("stored_messages") or 0
        if listeners:
            result["seconds_until_listeners"] = min(listeners) - started
            result["messages_per_second_before_listeners"] = stored / max(result["seconds_until_listeners"], 1e-9)
        result["messages_per_second"] = stored / result["timeout_seconds"]
        result["partial"] = True
        return result

    def cold_first_sync(self, stack: contextlib.ExitStack, imap: dict, backend: str) -> dict | None:
        """What a real first sync pays: the sync against a server that has cached none of its FETCH items.

        On the first database asked for, in a database of its own, before the cache is warmed for the
        measured runs; reported beside them, never used for their ratios or targets.
        """
        if backend == "postgresql" and not postgres_reachable(self.args.pg_url):
            return None
        label = f"{backend}, cold server cache"
        url = stack.enter_context(fresh_database(backend, self.workdir, self.args.pg_url, keep=self.args.keep))
        self.configs[label] = app_config(url, self.workdir / "instance-cold", self.args.redis_url, queue="bench-cold")
        setup = self.phase("setup", label, **imap, agent_email=AGENT_EMAIL, agent_password=AGENT_PASSWORD)
        if not setup or not setup.get("inbox_id"):
            self.note(f"the cold-cache first sync was not run: {(setup or {}).get('note', 'no inbox')}")
            return None
        result = self.phase("initial_sync", label, timeout=self.args.sync_timeout, inbox_id=setup["inbox_id"])
        if result is not None:
            result["database"] = backend
        return self.check_sync(label, "initial sync against a cold server cache", result)

    def open_databases(self, stack: contextlib.ExitStack) -> list[str]:
        opened = []
        instance = self.workdir / "instance"
        for database in self.args.db:
            if database == "postgresql" and not postgres_reachable(self.args.pg_url):
                self.note(f"PostgreSQL is not reachable at {self.args.pg_url}: skipped")
                continue
            url = stack.enter_context(fresh_database(database, self.workdir, self.args.pg_url, keep=self.args.keep))
            if self.args.keep:
                self.note(f"{database} database kept: {url}")
            self.configs[database] = app_config(url, instance, self.args.redis_url, queue=f"bench-{database}")
            if database == "sqlite" and self.args.sqlite_pragma:
                self.configs[database]["BENCH_SQLITE_PRAGMAS"] = self.args.sqlite_pragma
                self.note(f"experiment: SQLite connections run PRAGMA {', '.join(self.args.sqlite_pragma)}")
            self.results["databases"][database] = {}
            opened.append(database)
        return opened


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile and not py_spy():
        log("--profile needs py-spy: .venv/bin/pip install py-spy; running without profiles")
    workdir = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    workdir.chmod(0o755)
    try:
        results = Bench(args, workdir).run()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for path in report.write(results, args.out):
        log(f"wrote {path}")
    for line in report.summary_lines(results):
        print(line)
    return 0
