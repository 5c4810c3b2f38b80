"""The measured phases; each runs in a child process (bench.child) and returns a JSON-ready dict.

Phases taking ``app`` run inside its app context, built by the child from the
benchmark's configuration. Nothing here asserts speed; results are facts and
timings for the report.
"""
from __future__ import annotations

import gc
import inspect
import os
import resource
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from .child import mark

NOT_AVAILABLE = "not available"


# --------------------------------------------------------------------------- IMAP only (no app)


def wire(**kwargs: Any) -> dict:
    from .wire import wire_fetch

    return wire_fetch(**kwargs)


def noop_floor(**kwargs: Any) -> dict:
    from .wire import noop_floor as measure

    return measure(**kwargs)


def peer(**kwargs: Any) -> dict:
    from .peer import imap_tools_fetch

    return imap_tools_fetch(**kwargs)


# --------------------------------------------------------------------------- helpers


def _sync_func() -> Callable[[int], dict] | None:
    try:
        from plugins.imap_inbox.jobs import sync_inbox
    except ImportError:
        return None
    return sync_inbox


class GcTimer:
    """Seconds this process spends in Python's cycle collector while open (``gc.callbacks``), all threads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info) -> None:
        gc.callbacks.remove(self._callback)


class RssSampler:
    """Peak RSS per step of a sync (the sync itself, then each listener), sampled every 50 ms.

    ``ru_maxrss`` gives the process's true peak; this says which step reached it.
    """

    def __init__(self, tracer: MemoryTracer | None = None) -> None:
        self.tracer = tracer
        self.peaks: dict[str, float] = {}
        self.by_progress: list[tuple[int, float]] = []  # (messages stored, RSS MB) as the sync goes
        self.step = "sync"
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page_mb

    def _sample(self) -> None:
        rss = self._rss_mb()
        if rss > self.peaks.get(self.step, 0.0):
            self.peaks[self.step] = rss

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def enter(self, step: str) -> None:
        self._sample()
        self.step = step
        if self.tracer is not None:
            self.tracer.enter(step)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, float]:
        return {step: round(mb, 1) for step, mb in self.peaks.items()}

    def progress(self, done: int, total: int) -> None:
        """``on_progress`` of the sync: RSS every 5% of the mailbox (marked, so a stopped run keeps it)."""
        step = max(1000, total // 20)
        if not self.by_progress or done - self.by_progress[-1][0] >= step or done == total:
            rss = round(self._rss_mb(), 1)
            self.by_progress.append((done, rss))
            mark(f"rss-at {done} {rss}")
            if self.tracer is not None:
                self.tracer.look(f"{done:,} of {total:,} messages stored")


class MemoryTracer:
    """``--trace-memory``: where the Python heap goes, per step of a sync (tracemalloc).

    At every step change and every 5% of the mailbox stored it notes the traced
    memory, and keeps a snapshot of the largest heap seen; at the end it writes
    the peak per step and that snapshot's biggest allocation sites (by line,
    and by a few frames of traceback) to ``path``. Slows the sync down: only for
    a run of its own, never for the timings.
    """

    FRAMES = 6

    def __init__(self, path: str) -> None:
        import tracemalloc

        self.path = path
        self.tracemalloc = tracemalloc
        self.peaks: dict[str, float] = {}
        self.largest = (0, "", None)  # (traced bytes, where, snapshot)
        self.step = "sync"
        tracemalloc.start(self.FRAMES)

    def look(self, where: str | None = None) -> None:
        current, peak = self.tracemalloc.get_traced_memory()
        self.peaks[self.step] = max(self.peaks.get(self.step, 0), peak / 2**20)
        if current > self.largest[0]:
            self.largest = (current, where or self.step, self.tracemalloc.take_snapshot())

    def enter(self, step: str) -> None:
        self.look()
        self.step = step
        self.tracemalloc.reset_peak()

    def write(self) -> None:
        self.look()
        self.tracemalloc.stop()
        size, where, snapshot = self.largest
        lines = ["traced Python heap, peak per step (MB):"]
        lines += [f"  {step}: {mb:.1f}" for step, mb in self.peaks.items()]
        lines += ["", f"largest snapshot: {size / 2**20:.1f} MB, at {where}", "", "by line:"]
        if snapshot is not None:
            snapshot = snapshot.filter_traces([self.tracemalloc.Filter(False, self.tracemalloc.__file__)])
            lines += [f"  {stat}" for stat in snapshot.statistics("lineno")[:30]]
            lines += ["", "by traceback:"]
            for stat in snapshot.statistics("traceback")[:12]:
                lines.append(f"  {stat.size / 2**20:.1f} MB in {stat.count} blocks")
                lines += [f"      {line}" for line in stat.traceback.format()]
        with open(self.path, "w") as fh:
            fh.write("\n".join(lines) + "\n")


class ListenerTimer:
    """Times each plugin's hook implementation by wrapping the plugin manager's ``call_each``.

    The sync calls the mail core's ``mailbox_synced`` and the readers' implementations (contacts_import,
    reply_condition) run inside it; they only enqueue their follow-up jobs now, and this shows what that
    costs the sync.
    """

    def __init__(self, app: Flask, sampler: RssSampler | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        manager = app.extensions["plugins"]
        original = manager.call_each

        def timed_call_each(hook_name: str, **kwargs):
            event = kwargs.get("event")
            label = getattr(event, "type", hook_name)
            iterator = original(hook_name, **kwargs)
            for plugin in _listener_order(manager, hook_name):
                mark(f"listener {label}:{plugin}")
                if sampler is not None:
                    sampler.enter(f"listener {label}:{plugin}")
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                self.seconds[f"{label}:{item[0]}"] += time.perf_counter() - started
                if sampler is not None:
                    # Memory a listener freed is not returned to the OS: after mailbox_synced it is not "sync".
                    sampler.enter("after the listeners" if label == "mailbox_synced" else "sync")
                yield item
            yield from iterator

        manager.call_each = timed_call_each

    def report(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in sorted(self.seconds.items())}


def _listener_order(manager, hook_name: str) -> list[str]:
    """Plugin names in the order ``call_each`` calls them (so a mark names the listener about to run)."""
    hook = getattr(manager.pm.hook, hook_name, None)
    return [impl.plugin_name for impl in reversed(hook.get_hookimpls())] if hook else []


def _message_counts(inbox_id: int) -> dict:
    import sqlalchemy as sa

    from host_app.extensions import db
    from plugins.imap_inbox.models import ImapFolder, ImapInbox
    from plugins.mail.models import Message, MessageAddress

    by_folder = dict(db.session.execute(
        sa.select(ImapFolder.name, sa.func.count(Message.id)).join(Message, Message.folder_id == ImapFolder.id)
        .where(ImapFolder.inbox_id == inbox_id).group_by(ImapFolder.name)).all())
    inbox = db.session.get(ImapInbox, inbox_id)
    return {
        "stored_messages": sum(by_folder.values()),
        "stored_by_folder": by_folder,
        "distinct_addresses": db.session.scalar(
            sa.select(sa.func.count(sa.distinct(MessageAddress.email))).where(MessageAddress.inbox_id == inbox_id)),
        "parse_errors": db.session.scalar(
            sa.select(sa.func.count()).select_from(Message)
            .where(Message.inbox_id == inbox_id, Message.parse_error.is_not(None))),
        "inbox_status": inbox.status if inbox else None,
        "inbox_error": inbox.error if inbox else None,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _job_label(job) -> str:
    """``contacts_import.import_after_sync`` for ``plugins.contacts_import.jobs.import_after_sync``."""
    module, _, name = job.func_name.rpartition(".")
    return f"{module.removeprefix('plugins.').split('.')[0]}.{name}"


def _run_follow_ups(app: Flask, sampler: RssSampler) -> dict[str, dict]:
    """Run the jobs the sync enqueued (the readers' follow-ups), one at a time in this process, each timed.

    A ``SimpleWorker`` (the host's, which stops promptly) in burst mode, as ``manage.py worker`` runs them (it
    forks a work horse per job; here the job's own time and memory are what is measured). By label: seconds,
    CPU seconds and the job's status.
    """
    from host_app.jobs import AppSimpleWorker, queue, redis_connection

    jobs = queue(app)
    if not jobs.count and not jobs.deferred_job_registry.count:  # a no-op sync enqueues nothing
        return {}
    timings: dict[str, dict] = {}

    class TimedWorker(AppSimpleWorker):
        def perform_job(self, job, queue, execution):
            label = _job_label(job)
            mark(f"follow-up {label}")
            sampler.enter(f"follow-up {label}")
            cpu, started = _cpu_seconds(), time.perf_counter()
            try:
                return super().perform_job(job, queue, execution)
            finally:
                timings[label] = {"seconds": time.perf_counter() - started,
                                  "cpu_seconds": round(_cpu_seconds() - cpu, 3),
                                  "status": getattr(status := job.get_status(refresh=True), "value", status)}
                sampler.enter("after the follow-ups")

    TimedWorker([jobs], connection=redis_connection(app)).work(burst=True, logging_level="WARNING")
    return timings


def _timed_sync(app: Flask, inbox_id: int, trace_memory: str | None = None) -> dict:
    """One ``sync_inbox`` call, then the follow-up jobs it enqueued: wall and CPU seconds of each and end to end.

    ``seconds``/``cpu_seconds`` are end to end (the sync job, then its follow-ups), comparable with runs from
    before the follow-ups left the sync job; ``sync_seconds`` is the sync job alone, ``follow_ups`` each job.
    """
    sync_inbox = _sync_func()
    tracer = MemoryTracer(trace_memory) if trace_memory else None
    with RssSampler(tracer) as sampler, GcTimer() as collector:
        timer = ListenerTimer(app, sampler)
        mark("sync started")
        cpu = _cpu_seconds()
        started = time.perf_counter()
        if "on_progress" in inspect.signature(sync_inbox).parameters:
            summary = sync_inbox(inbox_id, on_progress=sampler.progress)
        else:
            summary = sync_inbox(inbox_id)
        sync_seconds = time.perf_counter() - started
        sync_cpu, sync_gc = _cpu_seconds() - cpu, collector.seconds
        # The high-water mark now is the sync job's own peak. The follow-ups then run in this process, on top of
        # what the sync left on its heap; a real worker runs each in a work horse of its own, forked from itself.
        sync_peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mark("sync finished")
        follow_ups = _run_follow_ups(app, sampler)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu
    if tracer is not None:
        tracer.write()
    return {"seconds": seconds, "cpu_seconds": round(cpu, 3), "sync_seconds": sync_seconds,
            "sync_cpu_seconds": round(sync_cpu, 3), "sync_peak_rss_mb": round(sync_peak_rss, 1),
            "follow_ups": follow_ups,
            "sync_gc_seconds": round(sync_gc, 3), "gc_seconds": round(collector.seconds, 3),
            "summary": summary if isinstance(summary, dict) else {"result": summary},
            "listener_seconds": timer.report(), "peak_rss_mb_by_step": sampler.report(),
            "rss_mb_by_messages_stored": sampler.by_progress}


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _latency(values: list[float]) -> dict:
    return {
        "runs": len(values),
        "p50_ms": round(_percentile(values, 50) * 1000, 2),
        "p95_ms": round(_percentile(values, 95) * 1000, 2),
        "min_ms": round(min(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


# --------------------------------------------------------------------------- database set-up


def setup(app: Flask, *, host: str, port: int, ca_file: str, username: str, password: str,
          agent_email: str, agent_password: str) -> dict:
    """Migrate the fresh database, add an admin and an agent, connect the inbox (owned by the agent)."""
    from host_app import migrating
    from host_app.auth import create_agent

    started = time.perf_counter()
    migrating.upgrade(app)
    migrate_seconds = time.perf_counter() - started
    create_agent("admin@team.example", "Bench Admin", "bench-admin-password", admin=True)
    agent = create_agent(agent_email, "Bench Agent", agent_password)
    result = {"migrate_seconds": migrate_seconds, "agent_id": agent.id, "inbox_id": None}
    try:
        from plugins.imap_inbox.service import create_inbox
    except ImportError:
        result["note"] = "plugins.imap_inbox.service is not installed yet: no inbox connected"
        return result
    # Create users on: the syncs' follow-up jobs are the contacts import and the reply matching, as in use.
    inbox = create_inbox(name="Bench inbox", host=host, port=port, security="ssl", username=username,
                         password=password, owner_id=agent.id, ca_pem=Path(ca_file).read_bytes(), check=True,
                         settings={"create_users": True})
    # The phases run the syncs themselves; the worker that runs their follow-ups must not find this one.
    from host_app.jobs import queue

    queue(app).empty()
    result["inbox_id"] = inbox.id
    return result


# --------------------------------------------------------------------------- syncs


def initial_sync(app: Flask, *, inbox_id: int, trace_memory: str | None = None) -> dict:
    """The first sync of the whole mailbox, end to end through the worker's job function."""
    result = _timed_sync(app, inbox_id, trace_memory)
    result.update(_message_counts(inbox_id))
    seconds, sync_seconds = result["seconds"], result["sync_seconds"]
    result["messages_per_second"] = result["stored_messages"] / seconds if seconds else None
    result["sync_messages_per_second"] = result["stored_messages"] / sync_seconds if sync_seconds else None
    listeners = sum(v for k, v in result["listener_seconds"].items() if k.startswith("mailbox_synced:"))
    result["seconds_until_listeners"] = sync_seconds - listeners
    result["messages_per_second_before_listeners"] = (
        result["stored_messages"] / (sync_seconds - listeners) if sync_seconds > listeners else None)
    return result


def sync_progress(app: Flask, *, inbox_id: int) -> dict:
    """How far a stopped sync got: what is stored, and the inbox's own progress counters."""
    from host_app.extensions import db
    from plugins.imap_inbox.models import ImapInbox

    inbox = db.session.get(ImapInbox, inbox_id)
    result = _message_counts(inbox_id)
    result["progress"] = [inbox.progress_done, inbox.progress_total] if inbox else None
    return result


def noop_sync(app: Flask, *, inbox_id: int, runs: int = 9) -> dict:
    """Syncs with nothing new on the server: the first in a fresh process, then ``runs`` more."""
    first = _timed_sync(app, inbox_id)
    timed = [_timed_sync(app, inbox_id) for _ in range(runs)]
    times = [t["seconds"] for t in timed]
    result = {"first_run_ms": round(first["seconds"] * 1000, 2),
              "median_ms": round(statistics.median(times) * 1000, 2),
              "median_cpu_ms": round(statistics.median(t["cpu_seconds"] for t in timed) * 1000, 2),
              "last_summary": timed[-1]["summary"], "listener_seconds": timed[-1]["listener_seconds"],
              "follow_ups": timed[-1]["follow_ups"],
              **_latency(times)}
    result.update(_message_counts(inbox_id))
    return result


def incremental_sync(app: Flask, *, inbox_id: int) -> dict:
    """One sync after new messages arrived (written to Maildir and indexed beforehand)."""
    before = _message_counts(inbox_id)["stored_messages"]
    result = _timed_sync(app, inbox_id)
    result.update(_message_counts(inbox_id))
    result["new_messages"] = result["stored_messages"] - before
    return result


# --------------------------------------------------------------------------- what builds on the sync


def contacts_import(app: Flask, *, inbox_id: int) -> dict:
    """The Create users preview (dry run), then the import of the whole mailbox."""
    try:
        from plugins.contacts_import import importer
    except ImportError:
        return {"available": False, "note": NOT_AVAILABLE}
    import sqlalchemy as sa

    from host_app.extensions import db
    from plugins.imap_inbox.models import ImapInbox

    inbox = db.session.get(ImapInbox, inbox_id)
    # The syncs' follow-ups imported the mailbox already (Create users is on): this phase measures creating
    # every contact, so the contacts go first (they are all the import's: the timeline phase runs later).
    from host_app.models import Contact

    db.session.execute(sa.delete(Contact))
    db.session.commit()
    started = time.perf_counter()
    preview = importer.dry_run(inbox)
    dry_run_seconds = time.perf_counter() - started
    db.session.rollback()  # the preview may have started a transaction; the import starts clean
    started = time.perf_counter()
    outcome = importer.import_inbox(inbox_id, full=True)
    seconds = time.perf_counter() - started
    return {"available": True, "seconds": seconds, "dry_run_seconds": dry_run_seconds,
            "would_create": preview.get("would_create"), "result": outcome}


def timeline(app: Flask, *, contact_email: str, contact_name: str, agent_email: str, agent_password: str,
             requests: int = 50) -> dict:
    """Server-side latency of the contact page (first page and an older page) as a logged-in agent."""
    import sqlalchemy as sa

    from host_app.extensions import db
    from host_app.models import Contact

    contact = db.session.scalar(sa.select(Contact).where(Contact.email == contact_email))
    created_here = contact is None
    if contact is None:  # the contacts import is not installed, or did not run
        contact = Contact(email=contact_email, name=contact_name, source="bench")
        db.session.add(contact)
        db.session.commit()
    contact_id = contact.id
    db.session.remove()
    client = app.test_client()
    login = client.post("/login", data={"email": agent_email, "password": agent_password})
    if login.status_code != 302:
        raise RuntimeError(f"agent login failed with HTTP {login.status_code}")

    def measure(url: str) -> tuple[list[float], int, int]:
        for _ in range(3):  # warm-up: templates compiled, caches filled
            client.get(url)
        times, status, size = [], 0, 0
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            status, size = response.status_code, len(response.data)
        return times, status, size

    first_url = f"/contacts/{contact_id}"
    times, status, size = measure(first_url)
    page = client.get(first_url).get_data(as_text=True)
    entries = page.count('<article class="entry')
    result = {"contact_id": contact_id, "contact_created_by_bench": created_here, "status": status,
              "entries_on_page": entries, "page_bytes": size, "first_page": _latency(times)}
    older = _older_page_url(page)
    if older:
        times, status, _ = measure(older)
        result["older_page"] = {"url": older, "status": status, **_latency(times)}
    result.update(_contact_message_count(contact_email))
    return result


def _older_page_url(page: str) -> str | None:
    import html
    import re

    match = re.search(r'href="(/contacts/\d+\?before=[^"]+)"', page)
    return html.unescape(match.group(1)) if match else None


def _contact_message_count(email: str) -> dict:
    import sqlalchemy as sa

    from host_app.extensions import db
    from plugins.mail.models import MessageAddress

    count = db.session.scalar(sa.select(sa.func.count(sa.distinct(MessageAddress.message_pk)))
                              .where(MessageAddress.email == email))
    return {"contact_messages_stored": count}


def condition(app: Flask, *, runs: int = 5) -> dict:
    """``imap_email`` evaluated in bulk over every contact: "responded" and "not responded"."""
    import sqlalchemy as sa

    from host_app.automation_engine import conditions
    from host_app.extensions import db
    from host_app.models import Contact

    found = conditions().get("imap_email")
    if found is None:
        return {"available": False, "note": NOT_AVAILABLE}
    ids = list(db.session.scalars(sa.select(Contact.id)))
    found.evaluate_bulk(ids, {"responded": True})  # warm-up
    times, matched = [], set()
    for _ in range(runs):
        started = time.perf_counter()
        matched = found.evaluate_bulk(ids, {"responded": True})
        times.append(time.perf_counter() - started)
    started = time.perf_counter()
    not_matched = found.evaluate_bulk(ids, {"responded": False})
    negated = time.perf_counter() - started
    started = time.perf_counter()
    within = found.evaluate_bulk(ids, {"responded": True, "within_days": 7})
    within_seconds = time.perf_counter() - started
    return {
        "available": True, "contacts": len(ids), "responded": len(matched), "not_responded": len(not_matched),
        "responded_within_7_days": len(within),
        "median_seconds": statistics.median(times), "max_seconds": max(times), "runs": runs,
        "not_responded_seconds": negated, "within_7_days_seconds": within_seconds,
    }
