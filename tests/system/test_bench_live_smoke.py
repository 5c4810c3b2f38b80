"""The live section of the benchmark at a tiny size: it runs end to end and nothing delivered is lost.

Timings are never asserted (the targets are for ``make bench`` on a quiet machine); only what must hold
however fast the machine is.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT as REPO

INBOXES = 12  # two watchers each get a share but for odds of 1 in 2,048


def test_live_bench_measures_every_target_and_loses_no_message(crm_database_server_url, tmp_path):
    database = "postgresql" if crm_database_server_url else "sqlite"
    command = [sys.executable, "-m", "bench.live", "--inboxes", str(INBOXES), "--rate", "1", "--duration", "4",
               "--idle-seconds", "1", "--first-sync-workers", "0", "--db", database, "--out", str(tmp_path)]
    if crm_database_server_url:
        command += ["--pg-url", crm_database_server_url]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / f"live-{INBOXES}-{database}.json").read_text())
    assert results["latency"]["messages"] == results["latency"]["arrived"] == 4
    takeover = results["takeover"]
    assert takeover["missed"] == 0 and takeover["delivered_during_takeover"] == 20
    assert takeover["inboxes_moved"] >= 1
    assert results["leases_lost_alone"] == 0
    for key in ("all_watches_up_seconds", "first_syncs_seconds"):
        assert results[key] > 0
    for section in ("watcher_idle", "watcher_under_load"):
        assert results[section]["rss_mb"] > 0
    text = (tmp_path / f"live-{INBOXES}-{database}.md").read_text()
    for label in ("p95 latency", "watcher RSS idle", "watcher CPU idle", "all watches up", "takeover after SIGKILL"):
        assert f"| {label}" in text
