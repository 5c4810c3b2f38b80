"""Processes the reliability tests start, stop and kill: an RQ worker (``manage.py worker``), a Redis of their own."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from tests.support import ROOT


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05,
             details: Callable[[], str] = lambda: "") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` (and ``details()``) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children before grandchildren."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may contain spaces, so split after its closing parenthesis.
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """``manage.py worker`` in a subprocess (its own process group), configured like ``app`` through the environment."""

    command = "worker"

    def __init__(self, app: Flask, log_path: Path, **settings: str):
        self.app = app
        self.log_path = log_path
        self.settings = settings  # more CRM_* settings, e.g. IMAP_FETCH_BATCH="250"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        config = self.app.config
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
        env.update(
            DATABASE_URL=config["SQLALCHEMY_DATABASE_URI"],
            REDIS_URL=config["REDIS_URL"],
            CRM_RQ_QUEUE=config["RQ_QUEUE"],
            CRM_SECRET_KEY=config["SECRET_KEY"],
            CRM_INSTANCE_PATH=self.app.instance_path,
            CRM_IMAP_ENCRYPTION_KEYS=str(config["IMAP_ENCRYPTION_KEYS"]),
            CRM_IMAP_BLOCK_PRIVATE_HOSTS=str(config.get("IMAP_BLOCK_PRIVATE_HOSTS", True)),
            CRM_IMAP_CA_DIR=str(config.get("IMAP_CA_DIR") or ""),
            PYTHONUNBUFFERED="1",
        )
        env.update({f"CRM_{name}": str(value) for name, value in self.settings.items()})
        return env

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), self.command], cwd=ROOT, env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # the work horses it forks share its process group
            )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its work horse, like the OOM killer or a pulled plug.

        RQ puts each work horse in a process group of its own (``os.setpgrp``),
        so killing the worker's group alone would leave the horse syncing.
        """
        if self.process is None:
            return
        pids = [self.process.pid, *child_pids(self.process.pid)]
        for pid in reversed(pids):  # the horse first: it is the one writing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        wait_for(lambda: not any(is_alive(pid) for pid in pids[1:]), 10, "the work horse to die")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.kill()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return f"{self.command} log:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no worker log)"


class SchedulerProcess(WorkerProcess):
    """``manage.py scheduler`` (RQ's cron scheduler with the plugins' recurring jobs), configured like ``app``."""

    command = "scheduler"


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence: a restart loses everything."""

    def __init__(self):
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="redis-faults-")
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory, "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        from redis import Redis
        from redis.exceptions import RedisError

        try:
            return bool(Redis(port=self.port, socket_timeout=1).ping())
        except RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Kill -9 and start again on the same port: every queued job and every lock is gone."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
