"""``manage.py watch`` in a subprocess, configured like the test's app, beside a real RQ worker."""
from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT
from tests.support.reliability_helpers import WorkerProcess, wait_for


class WatcherProcess(WorkerProcess):
    """A watcher process (its own process group); ``kill()`` is SIGKILL, as by the OOM killer."""

    def start(self) -> WatcherProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "watch"], cwd=ROOT, env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def log_tail(self, lines: int = 60) -> str:
        return super().log_tail(lines).replace("worker log:", f"watcher log ({self.log_path.name}):", 1)


def watch_statuses(app, inbox_ids) -> dict[int, dict]:
    from plugins.imap_inbox.watcher import watch_status

    with app.app_context():
        return watch_status.read(list(inbox_ids))[0]


def wait_until_live(app, inbox_ids, timeout: float = 30, details=lambda: "") -> None:
    wait_for(lambda: all(s.get("mode") == "live" for s in watch_statuses(app, inbox_ids).values())
             and len(watch_statuses(app, inbox_ids)) == len(list(inbox_ids)),
             timeout, f"inboxes {list(inbox_ids)} to be watched live", interval=0.2, details=details)
