"""The search benchmark at a tiny size: it runs on its own, writes its results and finds what it stored.

Timings are never asserted; only facts that hold however fast the machine is.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT as REPO


def test_search_bench_runs_and_reports_every_query_kind(crm_database_server_url, tmp_path):
    database = "postgresql" if crm_database_server_url else "sqlite"
    command = [sys.executable, "-m", "bench.search", "--messages", "700", "--queries", "3", "--db", database,
               "--overhead-messages", "100", "--overhead-rounds", "1", "--out", str(tmp_path)]
    if crm_database_server_url:
        command += ["--pg-url", crm_database_server_url]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / f"search-700-{database}.json").read_text())
    assert result["messages"] == 700 and result["message_search"]["runs"] == 5 * 2 * 3
    kinds = result["kinds"]
    assert len(kinds) == 15
    # Every order number is in exactly one stored e-mail, on its correspondent's timeline.
    assert kinds["order number, all contacts"]["median_results"] == 1
    assert kinds["frequent word (rank 21-60, in 5-12% of mail), all contacts"]["median_results"] >= 10
    assert result["insert_overhead"]["rounds"] == 1
    assert "| query | p50 ms |" in (tmp_path / f"search-700-{database}.md").read_text()
