"""The production shape: gunicorn (the ``prod`` extra) behind a reverse proxy, with ProxyFix for
CRM_TRUSTED_PROXIES proxies; without it, forwarded headers are ignored."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from host_app.testing import ADMIN_PASSWORD, make_agent
from tests.support import ROOT
from tests.support.reliability_helpers import free_port, wait_for

GUNICORN = Path(sys.executable).with_name("gunicorn")


def get(url: str, headers: dict):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers


def test_gunicorn_behind_a_proxy_serves_https_headers_and_no_versions(crm_database_url, redis_url, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'crm.sqlite'}", REDIS_URL=redis_url,
               CRM_INSTANCE_PATH=str(tmp_path / "instance"), CRM_TRUSTED_PROXIES="1")
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen([str(GUNICORN), "-w", "2", "-b", f"127.0.0.1:{port}", "host_app:create_app()"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            try:
                return get(f"http://127.0.0.1:{port}/login", {})[0] == 200
            except OSError:
                return False

        wait_for(answers, 60, "gunicorn", details=lambda: (tmp_path / "gunicorn.log").read_text(errors="replace"))
        status, headers = get(f"http://127.0.0.1:{port}/login", {"X-Forwarded-Proto": "https",
                                                                 "X-Forwarded-For": "203.0.113.5"})
        assert status == 200
        assert "max-age" in headers["Strict-Transport-Security"]  # the request counts as HTTPS
        assert headers["Server"] == "gunicorn"  # no version of anything
        assert "script-src 'self'" in headers["Content-Security-Policy"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_forwarded_client_addresses_count_only_behind_trusted_proxies(crm_app_factory, caplog):
    for proxies, seen in ((1, "203.0.113.5"), (0, "127.0.0.1")):
        app = crm_app_factory(TRUSTED_PROXIES=proxies)
        if proxies:
            make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
        caplog.clear()
        app.test_client().post("/login", data={"email": "admin@team.example", "password": "wrong-password"},
                               headers={"X-Forwarded-For": "203.0.113.5"})
        assert f"failed login for admin@team.example from {seen}" in caplog.text
