"""The benchmark harness at a tiny size: every result file and section is produced, and the facts add up.

Timings are never asserted; only counts that must hold however fast the machine is.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.report import SECTIONS
from tests.support import ROOT as REPO

N = 200
NEW_MESSAGES = 50


@pytest.fixture(scope="module")
def bench_run(crm_database_server_url, tmp_path_factory):
    """One harness run (own Dovecot, one database) into a temporary results folder."""
    out = tmp_path_factory.mktemp("bench-results")
    server_url = crm_database_server_url
    database = "postgresql" if server_url else "sqlite"
    command = [sys.executable, "-m", "bench", "--n", str(N), "--db", database, "--out", str(out),
               "--new-messages", str(NEW_MESSAGES), "--noop-runs", "2", "--timeline-requests", "3"]
    if server_url:
        command += ["--pg-url", server_url]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, database, proc


def test_result_files_with_every_section(bench_run):
    out, database, proc = bench_run
    for name in (f"n{N}-{database}.json", f"n{N}-{database}.md", "latest.md", "latest.json"):
        assert (out / name).is_file(), name
    for name in (f"n{N}-{database}.md", "latest.md"):
        text = (out / name).read_text()
        for section in SECTIONS:
            assert f"## {section}\n" in text, f"{section} missing from {name}"
    assert "the wire limit" in proc.stdout and "the peer" in proc.stdout


def test_mailbox_wire_and_peer_counts(bench_run):
    out, database, _ = bench_run
    results = json.loads((out / f"n{N}-{database}.json").read_text())
    assert results["meta"]["n"] == N
    box = results["mailbox"]
    assert (box["inbox"], box["sent"]) == (N, N // 10)
    assert box["timeline_contact_messages"] == N // 4
    total = N + N // 10
    assert results["wire"]["messages"] == total
    assert results["wire"]["bytes"] > 0
    assert results["wire_peer_items"]["messages"] == total
    assert results["peer"]["messages"] == total
    assert results["noop_floor"]["rounds"] > 0 and results["noop_floor"]["total_ms"] > 0
    assert results["new_mail"]["inbox"] + results["new_mail"]["sent"] == NEW_MESSAGES


def test_the_first_sync_against_a_cold_server_cache_is_reported(bench_run):
    out, database, _ = bench_run
    results = json.loads((out / f"n{N}-{database}.json").read_text())
    cold = results["cold_first_sync"]
    assert cold["database"] == database and cold["summary"]["status"] == "ok"
    assert cold["stored_messages"] == N + N // 10 and cold["messages_per_second"] > 0
    assert "| first sync against a cold server cache (before the warm-up) | " in (out / "latest.md").read_text()


def test_sync_import_timeline_and_condition_facts(bench_run):
    out, database, _ = bench_run
    results = json.loads((out / f"n{N}-{database}.json").read_text())
    assert not [note for note in results["notes"] if "failed" in note], results["notes"]
    data = results["databases"][database]
    total = N + N // 10
    assert data["initial_sync"]["summary"]["status"] == "ok"
    assert data["initial_sync"]["stored_messages"] == total
    assert data["initial_sync"]["stored_by_folder"] == {"INBOX": N, "Sent": N // 10}
    assert data["initial_sync"]["peak_rss_mb"] > 0
    assert 0 < data["initial_sync"]["sync_peak_rss_mb"] <= data["initial_sync"]["peak_rss_mb"]
    assert "sync" in data["initial_sync"]["peak_rss_mb_by_step"]
    # The sync job only enqueued the readers' work; their follow-up jobs ran after it, each timed.
    follow_ups = {"contacts_import.import_after_sync", "reply_condition.match_after_sync",
                  "imap_inbox.list_attachments"}
    for phase in ("initial_sync", "incremental_sync"):
        jobs = data[phase]["follow_ups"]
        assert set(jobs) == follow_ups and all(job["status"] == "finished" for job in jobs.values()), jobs
        assert data[phase]["sync_seconds"] + sum(job["seconds"] for job in jobs.values()) <= data[phase]["seconds"]
    assert data["noop_sync"]["follow_ups"] == {}  # nothing new, nothing enqueued
    assert data["noop_sync"]["stored_messages"] == total
    assert data["noop_sync"]["runs"] == 2
    assert data["incremental_sync"]["summary"]["status"] == "ok"
    assert data["incremental_sync"]["new_messages"] == NEW_MESSAGES
    assert data["contacts_import"]["available"] is True
    created = data["contacts_import"]["result"]["created"]
    assert created > 0
    assert data["timeline"]["status"] == 200
    assert data["timeline"]["contact_messages_stored"] == N // 4
    assert data["timeline"]["entries_on_page"] > 0
    assert data["timeline"]["first_page"]["runs"] == 3
    assert data["condition"]["available"] is True
    assert data["condition"]["contacts"] >= created
    assert data["condition"]["responded"] + data["condition"]["not_responded"] == data["condition"]["contacts"]
    assert data["condition"]["responded"] > 0  # the timeline contact answers our mail
    assert [t["target"] for t in data["targets"]]
