"""``manage.py run``, the newcomer's command: database, first admin, web and background processes, stopped together."""
from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support import ROOT
from tests.support.reliability_helpers import child_pids, free_port, is_alive, wait_for


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def assert_plain_http_login_works(base: str, password: str) -> None:
    """Over http://127.0.0.1 the session cookie must not be Secure, or no browser would send it back; and the
    Server header names no Werkzeug or Python version."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base + "/login", timeout=10) as response:
        page = response.read().decode()
        server = response.headers.get("Server", "")
    assert "Werkzeug" not in server and "Python" not in server, server
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf_token": token, "email": "admin@example.com", "password": password})
    with opener.open(base + "/login", data=form.encode(), timeout=10) as response:
        assert "Log out" in response.read().decode()


def test_run_serves_the_app_with_a_worker_and_a_scheduler_and_stops_them_all(redis_url, tmp_path, empty_database_url):
    # On the suite's database server too: the login, the session version and the throttle all reach the database.
    port = free_port()
    instance = tmp_path / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update(DATABASE_URL=empty_database_url, REDIS_URL=redis_url,
               CRM_INSTANCE_PATH=str(instance), CRM_RQ_QUEUE=f"test-run-{os.getpid()}", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        # A session of its own, as a terminal gives: Ctrl-C below goes to its whole process group.
        run = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "run", "--port", str(port)], cwd=ROOT,
                               env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    children: list[int] = []
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/login"), 60, "the web server",
                 details=lambda: log_path.read_text(errors="replace"))
        output = log_path.read_text(errors="replace")
        assert "Log in as admin@example.com with password" in output
        assert "for this machine; production: docs/deployment.md" in output
        password = re.search(r"with password (\S+)", output).group(1)
        assert_plain_http_login_works(f"http://127.0.0.1:{port}", password)
        password_file = instance / "first_admin_password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600

        def background() -> dict[str, int]:
            found = {}
            for pid in child_pids(run.pid):
                command = _cmdline(pid)
                for role in ("worker", "scheduler", "watch"):
                    if command.endswith(f"manage.py {role} "):
                        found[role] = pid
            return found

        wait_for(lambda: len(background()) == 3, 30, "a worker, a scheduler and the IMAP watcher",
                 details=lambda: str(background()))
        children = list(background().values())
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl+C in the terminal: every process of the foreground group
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    wait_for(lambda: not any(is_alive(pid) for pid in children), 20,
             "the worker, the scheduler and the watcher to stop")
    assert children
    # Stopped quietly: no traceback from it or from its children, and it says so.
    output = log_path.read_text(errors="replace")
    assert "Traceback" not in output and "KeyboardInterrupt" not in output and "Aborted" not in output, output
    assert output.rstrip().endswith("Stopped."), output[-2000:]


def test_run_says_when_its_port_is_taken_before_it_starts_anything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/crm.sqlite", CRM_INSTANCE_PATH=str(tmp_path / "instance"))
    with socket.create_server(("127.0.0.1", port)):  # another program listening there
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), "run", "--port", str(port)], cwd=ROOT,
                              env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is not free (another program is listening there)" in done.stderr
    assert "make run PORT=8000" in done.stderr and "running at" not in done.stdout
    assert "Traceback" not in done.stderr
    with sqlite3.connect(tmp_path / "crm.sqlite") as database:  # nothing started, not even the upgrade
        assert database.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
