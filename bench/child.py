"""Each measured phase runs in a child process of its own, so its peak RSS is its own.

Parent side: :func:`run_phase` writes a spec file, starts ``python -m bench.child
SPEC RESULT`` (optionally under ``py-spy record``) and reads the result file.
Child side: builds the app when the phase needs one, notes the RSS before the
phase, runs it, and adds ``peak_rss_mb`` (``ru_maxrss`` of the child itself).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASE_TIMEOUT = 900


class PhaseFailed(RuntimeError):
    """A child process exited with an error: ``summary`` is its last line, ``stderr`` the last lines."""

    def __init__(self, phase: str, returncode: int, stderr: str):
        lines = stderr.strip().splitlines()
        self.summary = lines[-1] if lines else f"exit status {returncode}"
        self.stderr = "\n".join(lines[-40:])
        super().__init__(f"phase {phase} failed (exit {returncode}): {self.summary}")


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


_marks_file: str | None = None
_marks_started = time.perf_counter()


def mark(what: str) -> None:
    """Note (child side) that the phase reached ``what``; read back by the parent when it had to stop us."""
    if _marks_file:
        with open(_marks_file, "a") as fh:
            fh.write(f"{time.perf_counter() - _marks_started:.3f} {what}\n")


def read_marks(path: Path) -> list[tuple[float, str]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(t), what) for t, _, what in (line.partition(" ") for line in lines) if t]


def py_spy() -> str | None:
    """The py-spy binary next to our interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class PhaseTimeout(PhaseFailed):
    """The child ran longer than its time budget and was stopped; ``marks`` says how far it got."""

    def __init__(self, phase: str, seconds: float, stderr: str):
        super().__init__(phase, -1, stderr)
        self.seconds = seconds
        self.marks: list[tuple[float, str]] = []
        self.summary = f"did not finish within {seconds:.0f} s (stopped)"
        self.args = (f"phase {phase} {self.summary}",)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT first (py-spy then still writes its profile), SIGKILL for whatever is left."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def run_phase(phase: str, *, app_config: dict | None = None, profile: Path | None = None,
              timeout: float = PHASE_TIMEOUT, **kwargs: Any) -> dict:
    """Run ``bench.phases.<phase>(**kwargs)`` in a child; return its result dict.

    With ``profile`` (a path without suffix) the child runs under ``py-spy
    record`` and leaves ``<profile>.txt`` (collapsed stacks) behind. A child
    running longer than ``timeout`` seconds is stopped: :class:`PhaseTimeout`.
    """
    with tempfile.TemporaryDirectory(prefix="bench-phase-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        stderr_path = Path(tmp) / "stderr.txt"
        marks_path = Path(tmp) / "marks.txt"
        spec_path.write_text(json.dumps({"phase": phase, "app_config": app_config, "kwargs": kwargs,
                                         "marks": str(marks_path)}))
        command = [sys.executable, "-m", "bench.child", str(spec_path), str(result_path)]
        spy = py_spy() if profile else None
        if profile and spy:
            profile.parent.mkdir(parents=True, exist_ok=True)
            # --idle: time spent waiting for the IMAP server or the database shows up too.
            # --subprocesses: the row-building helper too (focus on _process_worker to see it alone).
            command = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking", "--idle",
                       "--subprocesses", "-o", f"{profile}.txt", "--", *command]
        started = time.perf_counter()
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                    cwd=Path(__file__).resolve().parent.parent)
            try:
                returncode = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                error = PhaseTimeout(phase, timeout, stderr_path.read_text(errors="replace"))
                error.marks = read_marks(marks_path)
                raise error from None
        wall = time.perf_counter() - started
        if returncode != 0 or not result_path.exists():
            raise PhaseFailed(phase, returncode, stderr_path.read_text(errors="replace"))
        result = json.loads(result_path.read_text())
        result["process_seconds"] = wall
        if profile and spy:
            result["profile"] = f"{profile}.txt"
        return result


def _apply_sqlite_pragmas(pragmas: list[str] | None) -> None:
    """Experiment knob (``--sqlite-pragma``): run these PRAGMAs on every new SQLite connection."""
    if not pragmas:
        return
    from sqlalchemy import event

    from host_app.extensions import db

    if db.engine.dialect.name != "sqlite":
        return

    def on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    event.listen(db.engine, "connect", on_connect)
    db.engine.dispose()  # connections made while the app was built did not run them


def _child_main(spec_path: str, result_path: str) -> None:
    from bench import phases

    global _marks_file, _marks_started
    spec = json.loads(Path(spec_path).read_text())
    _marks_file, _marks_started = spec.get("marks"), time.perf_counter()
    func = getattr(phases, spec["phase"])
    kwargs = spec["kwargs"]
    if spec["app_config"] is not None:
        from host_app import create_app
        from host_app.jobs import start_work_horse

        app = create_app(spec["app_config"])
        with app.app_context():
            _apply_sqlite_pragmas(spec["app_config"].get("BENCH_SQLITE_PRAGMAS"))
            start_work_horse()  # the phase's jobs run as in an RQ work horse forked from a worker
            baseline = current_rss_mb()
            result = func(app, **kwargs)
    else:
        baseline = current_rss_mb()
        result = func(**kwargs)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["rss_before_mb"] = round(baseline, 1)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)  # the whole child, start-up included
    # The sync's own helper process (rows built beside it, plugins/imap_inbox/rows.py), if it had one.
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["helper_peak_rss_mb"] = round(helpers.ru_maxrss / 1024, 1)
    result["helper_cpu_seconds"] = round(helpers.ru_utime + helpers.ru_stime, 3)
    tmp = Path(result_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, result_path)


if __name__ == "__main__":
    # Run in the importable module, not in __main__, so phases share its marks file.
    from bench.child import _child_main as child_main

    child_main(sys.argv[1], sys.argv[2])
