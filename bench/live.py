"""``python -m bench.live``: live inboxes at scale (see bench/README.md, "Live inboxes").

A Dovecot with ``--inboxes`` accounts, all connected to the CRM and watched by
``manage.py watch``; ``--workers`` RQ workers sync. Messages are APPENDed to
random accounts at ``--rate`` per second for ``--duration`` seconds, and each
one's latency is the time from the APPEND's answer to its row being stored
(with its address rows, in the same commit: what the contact's timeline
reads). Then a second watcher joins, one of the two is SIGKILLed, and the
time until the survivor watches every inbox again is measured, with mail
delivered meanwhile that must all arrive.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .databases import BACKENDS, DEFAULT_PG_URL, fresh_database
from .redis_server import private_redis
from .run import RESULTS_DIR, default_base_dir, log

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "live-bench-password"
CONTACT = "lead@client.example"

# Dovecot's defaults (100 processes per service) are sized for a small office, not 1,000 connections
# from one client: login processes in high-performance mode (each proxies many TLS clients), room for one
# imap process per connection, and IDLE checks every second as the issue asks.
DOVECOT_LIMITS = """
default_process_limit = 3000
default_client_limit = 6000
default_vsz_limit = 1G
mailbox_idle_check_interval = 1 secs
service imap-login {
  service_count = 0
  process_min_avail = 2
  client_limit = 3000
}
service imap {
  process_limit = 3000
}
service auth {
  client_limit = 6000
}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    parser.add_argument("--inboxes", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1.0,
                        help="messages delivered per second, all inboxes together (default 1: 86,400 a day, "
                             "about what 1,000 busy team inboxes receive)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of steady delivery (default 120)")
    parser.add_argument("--workers", type=int, default=4,
                        help="RQ workers syncing and running the follow-up jobs (default 4; see bench/README.md)")
    parser.add_argument("--first-sync-workers", type=int, default=4,
                        help="extra RQ workers only for the first syncs of the new inboxes, stopped before "
                             "anything is measured (default 4: the first syncs are not what this measures)")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="seconds the watchers are measured doing nothing (default 30)")
    parser.add_argument("--db", default="sqlite", choices=BACKENDS)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--base-dir", default=default_base_dir())
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class ProcessStats:
    """CPU seconds and RSS of one process (and its children), from /proc."""

    def __init__(self, pid: int):
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


class LiveBench:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.children: list[subprocess.Popen] = []
        self.results: dict = {"meta": {"inboxes": args.inboxes, "rate_per_second": args.rate,
                                       "duration_seconds": args.duration, "workers": args.workers,
                                       "first_sync_workers": args.first_sync_workers,
                                       "database": args.db, "cpus": os.cpu_count(),
                                       "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                             "notes": []}
        self.rng = random.Random(args.seed)

    # ------------------------------------------------------------------ processes

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        env.update(DATABASE_URL=self.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=self.config["REDIS_URL"],
                   CRM_RQ_QUEUE=self.config["RQ_QUEUE"], CRM_SECRET_KEY=self.config["SECRET_KEY"],
                   CRM_INSTANCE_PATH=self.config["INSTANCE_PATH"],
                   CRM_IMAP_ENCRYPTION_KEYS=self.config["IMAP_ENCRYPTION_KEYS"],
                   CRM_IMAP_BLOCK_PRIVATE_HOSTS="false", PYTHONUNBUFFERED="1")
        return env

    def start(self, command: str, name: str, *options: str) -> subprocess.Popen:
        log_file = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's life
        child = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), command, *options], cwd=ROOT,
                                 env=self.environment(), stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    # ------------------------------------------------------------------ what the CRM sees

    def live_holders(self) -> dict[int, str]:
        from plugins.imap_inbox.watcher import watch_status

        with self.app.app_context():
            statuses = watch_status.read(self.inbox_ids)[0]
        return {i: s["watcher"] for i, s in statuses.items() if s.get("mode") == "live"}

    def stored(self, message_ids: list[str]) -> set[str]:
        from host_app.api import db
        from plugins.mail.models import Message

        found: set[str] = set()
        with self.app.app_context():
            for start in range(0, len(message_ids), 500):
                chunk = message_ids[start:start + 500]
                found.update(db.session.scalars(db.select(Message.message_id).where(Message.message_id.in_(chunk))))
            db.session.remove()
        return found

    def queue_empty(self) -> bool:
        from rq import Queue

        from host_app.api import redis_connection

        with self.app.app_context():
            q = Queue(self.config["RQ_QUEUE"], connection=redis_connection())
            return q.count == 0 and q.started_job_registry.count == 0

    # ------------------------------------------------------------------ the run

    def run(self, server, redis_url: str, database_url: str) -> dict:
        from cryptography.fernet import Fernet

        from host_app import create_app, migrating
        from host_app.api import db
        from host_app.models import Contact
        from plugins.imap_inbox import service

        args = self.args
        self.config = {"SECRET_KEY": "live-bench", "SQLALCHEMY_DATABASE_URI": database_url,
                       "REDIS_URL": redis_url, "RQ_QUEUE": "live-bench", "INSTANCE_PATH": str(self.workdir),
                       "IMAP_ENCRYPTION_KEYS": Fernet.generate_key().decode(), "IMAP_BLOCK_PRIVATE_HOSTS": False}
        self.app = create_app(dict(self.config))
        migrating.upgrade(self.app)
        t = time.perf_counter()
        self.accounts = [f"live{n}@team.example" for n in range(args.inboxes)]
        for username in self.accounts:
            server.add_user(username, PASSWORD)
        with self.app.app_context():
            db.session.add(Contact(email=CONTACT, name="Lead"))
            db.session.commit()
            self.inbox_ids = [
                service.create_inbox(name=username, host=server.host, port=server.imaps_port, security="ssl",
                                     username=username, password=PASSWORD, owner_id=None,
                                     ca_pem=Path(server.ca_file).read_bytes(), check=False).id
                for username in self.accounts]
        self.account_of = dict(zip(self.inbox_ids, self.accounts, strict=True))
        log(f"{args.inboxes} accounts and inboxes made in {time.perf_counter() - t:.0f} s")

        for n in range(args.workers):
            self.start("worker", f"worker-{n}")
        helpers = [self.start("worker", f"first-sync-worker-{n}") for n in range(args.first_sync_workers)]
        self.wait(self.queue_empty, 1800, "the first syncs")
        self.results["first_syncs_seconds"] = round(time.perf_counter() - t, 1)
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
        for helper in helpers:
            helper.wait(30)
            self.children.remove(helper)

        # One watcher brings every watch up.
        t = time.perf_counter()
        first = self.start("watch", "watcher-1")
        self.wait(lambda: len(self.live_holders()) == len(self.inbox_ids), 600, "all watches up")
        self.results["all_watches_up_seconds"] = round(time.perf_counter() - t, 1)
        # Alone, a watcher must never lose a lease (it would mean a heartbeat came too late).
        self.results["leases_lost_alone"] = (self.workdir / "watcher-1.log").read_text().count("lease lost")
        log(f"all {len(self.inbox_ids)} watches up in {self.results['all_watches_up_seconds']} s")
        self.wait(self.queue_empty, 600, "catch-up syncs after connecting")

        stats = ProcessStats(first.pid)
        cpu, start = stats.cpu_seconds(), time.perf_counter()
        time.sleep(args.idle_seconds)
        self.results["watcher_idle"] = {
            "cpu_percent_of_a_core": round(100 * (stats.cpu_seconds() - cpu) / (time.perf_counter() - start), 2),
            "rss_mb": round(stats.rss_mb(), 1)}
        log(f"idle: {self.results['watcher_idle']}")

        cpu, start = stats.cpu_seconds(), time.perf_counter()
        latencies = self.deliver(args.rate, args.duration, list(self.inbox_ids))
        self.results["watcher_under_load"] = {
            "cpu_percent_of_a_core": round(100 * (stats.cpu_seconds() - cpu) / (time.perf_counter() - start), 2),
            "rss_mb": round(stats.rss_mb(), 1)}
        self.results["latency"] = summarize(latencies)
        self.results["stages"] = {name: summarize(values) for name, values in self.stages.items()}
        log(f"latency: {self.results['latency']}; under load: {self.results['watcher_under_load']}")

        self.results["takeover"] = self.takeover(first)
        return self.results

    def sync_jobs(self, inbox_ids: set[int]) -> dict[int, tuple[float | None, float | None, float | None]]:
        """Each inbox's sync job as RQ has it now: (enqueued, started, ended), epoch seconds or None.

        One job id per inbox, so this is the inbox's latest sync job.
        """
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        from host_app.api import redis_connection
        from plugins.imap_inbox.jobs import sync_job_id

        def epoch(at: dt.datetime | None) -> float | None:
            return None if at is None else (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()

        found = {}
        with self.app.app_context():
            for inbox_id in inbox_ids:
                try:
                    job = Job.fetch(sync_job_id(inbox_id), connection=redis_connection())
                except NoSuchJobError:
                    continue
                found[inbox_id] = (epoch(job.enqueued_at), epoch(job.started_at), epoch(job.ended_at))
        return found

    def deliver(self, rate: float, duration: float, inbox_ids: list[int]) -> dict[str, float | None]:
        """APPEND at a steady rate; return {message id: seconds from delivery to stored} (None: never).

        Also fills ``self.stages``: for each message, where its seconds went (see ``STAGES``), from the
        RQ timestamps of the sync job that stored it: the one that started after the delivery (or
        was running then and still stored it).
        """
        from plugins.imap_inbox.testing import mailgen

        delivered: dict[str, float] = {}
        delivered_at: dict[str, tuple[int, float]] = {}  # message id -> (inbox id, epoch seconds)
        latencies: dict[str, float | None] = {}
        jobs_seen: dict[str, tuple[float | None, float | None, float | None]] = {}
        stored_at: dict[str, float] = {}  # message id -> epoch seconds it was first seen stored
        lock = threading.Lock()
        done = threading.Event()

        def watch_database() -> None:
            while True:
                with lock:
                    waiting = [m for m in delivered if m not in latencies]
                    at_of = {m: delivered_at[m] for m in waiting}
                if not waiting and done.is_set():
                    return
                jobs = self.sync_jobs({inbox for inbox, _ in at_of.values()})
                for message_id, (inbox_id, at) in at_of.items():
                    job = jobs.get(inbox_id)
                    # The job that can store the message: enqueued after it, or started (or not yet) after it.
                    if job is not None and (job[1] is None or job[1] >= at or job[0] >= at):
                        jobs_seen[message_id] = job
                now, epoch_now = time.monotonic(), time.time()
                for message_id in self.stored(waiting) if waiting else ():
                    with lock:
                        latencies[message_id] = now - delivered[message_id]
                        stored_at[message_id] = epoch_now
                time.sleep(0.05)

        poller = threading.Thread(target=watch_database, daemon=True)
        poller.start()
        count = int(rate * duration)
        start = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            inbox_id = self.rng.choice(inbox_ids)
            message_id = f"live-{inbox_id}-{n}-{time.time_ns()}@client.example"
            raw = mailgen.make_message(f"Lead <{CONTACT}>", self.account_of[inbox_id], f"Live message {n}",
                                       message_id=f"<{message_id}>")
            self.server.append(self.account_of[inbox_id], "INBOX", raw)
            with lock:
                delivered[message_id] = time.monotonic()
                delivered_at[message_id] = (inbox_id, time.time())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if len(latencies) == len(delivered):
                    break
            time.sleep(0.2)
        done.set()
        poller.join(timeout=30)
        with lock:
            self.stages = stage_times(delivered_at, jobs_seen, stored_at)
            return {m: latencies.get(m) for m in delivered}

    def takeover(self, first: subprocess.Popen) -> dict:
        second = self.start("watch", "watcher-2")
        member_pid = lambda member: int(member.split(":")[1])  # noqa: E731 - host:pid:random
        t = time.perf_counter()
        self.wait(lambda: {member_pid(m) for m in self.live_holders().values()} == {first.pid, second.pid}
                  and len(self.live_holders()) == len(self.inbox_ids), 180, "the second watcher to take its share")
        share_seconds = round(time.perf_counter() - t, 1)
        holders = self.live_holders()
        victims = [i for i, m in holders.items() if member_pid(m) == first.pid]
        log(f"second watcher holds {len(holders) - len(victims)} inboxes after {share_seconds} s; killing the first")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed = time.perf_counter()
        # Mail to the dead watcher's inboxes while nobody watches them must still arrive.
        meanwhile = self.deliver(2.0, 10.0, victims)
        self.wait(lambda: len(self.live_holders()) == len(self.inbox_ids)
                  and {member_pid(m) for m in self.live_holders().values()} == {second.pid},
                  120, "the survivor to watch every inbox")
        return {"second_watcher_took_its_share_seconds": share_seconds, "inboxes_moved": len(victims),
                "takeover_seconds": round(time.perf_counter() - killed, 1),
                "delivered_during_takeover": len(meanwhile),
                "missed": sum(1 for v in meanwhile.values() if v is None),
                "latency_during_takeover": summarize(meanwhile)}

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (logs in {self.workdir})")
            for child in self.children:
                if child.poll() not in (None, -signal.SIGKILL):
                    raise RuntimeError(f"a child stopped (exit {child.returncode}); logs in {self.workdir}")
            time.sleep(0.5)


STAGES = {
    "watcher": "delivery to the sync job enqueued (IDLE notice, the watcher, enqueueing); messages whose "
               "inbox had a sync queued already joined it and are not counted",
    "queue": "enqueued (or delivered, if later) to a worker starting the job",
    "sync": "the job started to the row seen stored (fork, TLS, login, both folders, commit)",
}


def stage_times(delivered_at: dict[str, tuple[int, float]],
                jobs: dict[str, tuple[float | None, float | None, float | None]],
                stored_at: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Per stage of ``STAGES``, {message id: seconds}; None where the job's timestamps do not tell."""
    stages: dict[str, dict[str, float | None]] = {name: {} for name in STAGES}
    for message_id, (_, at) in delivered_at.items():
        job = jobs.get(message_id)
        if job is None or job[0] is None:
            continue
        enqueued, started, _ = job
        if enqueued >= at:
            stages["watcher"][message_id] = enqueued - at
        if started is not None:
            stages["queue"][message_id] = max(0.0, started - max(enqueued, at))
            if message_id in stored_at:
                stages["sync"][message_id] = max(0.0, stored_at[message_id] - max(started, at))
    return stages


def summarize(latencies: dict[str, float | None]) -> dict:
    values = sorted(v for v in latencies.values() if v is not None)
    if not values:
        return {"messages": len(latencies), "arrived": 0}

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 2)

    return {"messages": len(latencies), "arrived": len(values), "p50_s": pct(50), "p95_s": pct(95),
            "max_s": round(values[-1], 2), "mean_s": round(statistics.fmean(values), 2)}


TARGETS = [("latency", "p95_s", 5.0, "p95 latency (s)"), ("watcher_idle", "rss_mb", 150.0, "watcher RSS idle (MB)"),
           ("watcher_under_load", "rss_mb", 150.0, "watcher RSS under load (MB)"),
           ("watcher_idle", "cpu_percent_of_a_core", 5.0, "watcher CPU idle (% of a core)"),
           (None, "all_watches_up_seconds", 60.0, "all watches up (s)"),
           ("takeover", "takeover_seconds", 30.0, "takeover after SIGKILL (s)")]


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# Live inboxes: {meta['inboxes']} IDLE connections, {meta['database']}", "",
             f"{meta['workers']} RQ workers, {meta['rate_per_second']} messages/s for {meta['duration_seconds']} s, "
             f"{meta['cpus']} CPUs, load average at start {meta['load_average_at_start']}.", "",
             "| Measure | Result | Target | Margin |", "| --- | --- | --- | --- |"]
    for section, key, target, label in TARGETS:
        value = (results.get(section) or {}).get(key) if section else results.get(key)
        if value is None:
            lines.append(f"| {label} | not measured | ≤ {target:g} | |")
            continue
        if value > target:
            margin = f"{value - target:+.1f} over"
        else:
            margin = f"{target / value:.1f}× under" if value else "far under"
        lines.append(f"| {label} | {value} | ≤ {target:g} | {margin} |")
    latency = results.get("latency", {})
    stages = results.get("stages", {})
    lines += ["", f"Latency from APPEND to stored: p50 {latency.get('p50_s')} s, p95 {latency.get('p95_s')} s, "
              f"max {latency.get('max_s')} s; {latency.get('arrived')} of {latency.get('messages')} arrived.",
              "", "Where the seconds went (from the RQ timestamps of the sync job that stored each message):", "",
              "| Stage | p50 s | p95 s | max s | messages |", "| --- | --- | --- | --- | --- |"]
    for name, meaning in STAGES.items():
        stage = stages.get(name, {})
        lines.append(f"| {name}: {meaning} | {stage.get('p50_s')} | {stage.get('p95_s')} | {stage.get('max_s')} "
                     f"| {stage.get('arrived', 0)} |")
    lines += ["",
              f"Watcher under load: {results.get('watcher_under_load')}.",
              f"Takeover: {results.get('takeover')}.",
              f"First syncs of the empty inboxes: {results.get('first_syncs_seconds')} s.",
              f"Leases lost by the first watcher while alone (must be 0): {results.get('leases_lost_alone')}."]
    lines += [f"- note: {n}" for n in results.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from plugins.imap_inbox.testing.dovecot import DovecotServer

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, private_redis() as redis_url, \
            DovecotServer(args.base_dir, extra_config=DOVECOT_LIMITS) as server, \
            fresh_database(args.db, Path(tmp), args.pg_url) as database_url:
        bench = LiveBench(args, Path(tmp))
        bench.server = server
        try:
            results = bench.run(server, redis_url, database_url)
        finally:
            bench.stop_all()
    name = f"live-{args.inboxes}-{args.db}"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
