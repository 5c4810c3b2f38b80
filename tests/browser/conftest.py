"""Real-browser fixtures: the app served over HTTP with real CSRF, a real RQ worker, headless Chromium.

* ``app``: the app with every installed plugin, CSRF on, a fixed IMAP encryption key (shared with the worker),
  and a Redis queue of its own, on the session's Redis database (or ``BROWSER_REDIS_URL``, offset per xdist
  worker like ``TEST_REDIS_URL``).
* ``live_server``: ``app`` served by werkzeug on 127.0.0.1 (a free port, background thread), plus an RQ
  worker subprocess (``manage.py worker``) on the same database, Redis queue and encryption key.
* ``browser`` (one Chromium for the browser tests), ``page`` (a fresh context per test, 1280x800 unless the
  test parametrizes ``context_options``),
  ``admin_page`` (logged in as the admin); page helpers are in helpers.py.
* ``screenshot(name)``: a PNG of the page; into docs/screenshots/ when ``UPDATE_SCREENSHOTS=1``,
  else into the test's temporary folder (so a normal run never dirties the working tree).

Every test here is marked ``browser`` (``pytest -m browser`` selects them; the normal suite runs them too).
Uncaught JavaScript errors on a page fail the test.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask

from host_app.testing import worker_redis_url
from tests.support.reliability_helpers import WorkerProcess, wait_for

from .helpers import TIMEOUT_MS, log_in

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}

# One key for the web app and the worker: a password the form encrypts must decrypt in the worker.
ENCRYPTION_KEY = Fernet.generate_key().decode()
# A queue of their own, named per process like host_app.testing's: a worker of another session (another
# xdist worker, another suite) would take our sync jobs and run them against its own database. The Redis
# database is the session's, which no other session flushes (host_app.testing gives each worker its own).
BROWSER_REDIS_URL = os.environ.get("BROWSER_REDIS_URL")
BROWSER_QUEUE = f"browser-{os.getpid()}"

_HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: end-to-end tests in headless Chromium (select with -m browser)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.browser_call_failed = report.failed
    return report


# ---------------------------------------------------------------------------
# The app, served, with a worker
# ---------------------------------------------------------------------------


@pytest.fixture
def redis_url(redis_url) -> str:
    """The browser tests' Redis database, emptied before each test: host_app.testing's, unless
    ``BROWSER_REDIS_URL`` names another (then offset per xdist worker too)."""
    if not BROWSER_REDIS_URL:
        return redis_url
    from redis import Redis

    url = worker_redis_url(BROWSER_REDIS_URL)
    conn = Redis.from_url(url)
    conn.flushdb()
    conn.close()
    return url


@pytest.fixture
def app(crm_app_factory, redis_url) -> Flask:
    """The app with every installed plugin and real CSRF protection (overrides host_app.testing's ``app``)."""
    return crm_app_factory(
        WTF_CSRF_ENABLED=True, IMAP_ENCRYPTION_KEYS=ENCRYPTION_KEY, REDIS_URL=redis_url, RQ_QUEUE=BROWSER_QUEUE
    )


class RQWorkerProcess(WorkerProcess):
    """``manage.py worker`` in a subprocess, configured like ``app``, that can list the jobs that failed."""

    def __init__(self, app: Flask, log_path: Path):
        super().__init__(app, log_path, TESTING="true")

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Wait until the worker ran every job on the test queue and those they enqueued: a sync shows OK
        before its follow-up jobs (the contacts import, the reply matching) have run."""
        from rq import Queue

        from host_app.jobs import redis_connection

        queue = Queue(self.app.config["RQ_QUEUE"], connection=redis_connection(self.app))
        wait_for(lambda: not (queue.count or queue.started_job_registry.count or queue.deferred_job_registry.count),
                 timeout, "the worker to run the queued jobs", interval=0.2, details=self.log_tail)

    def failed_jobs(self) -> list[str]:
        """Ids and errors of jobs that failed on the test queue."""
        from rq import Queue
        from rq.registry import FailedJobRegistry

        from host_app.jobs import redis_connection

        queue = Queue(self.app.config["RQ_QUEUE"], connection=redis_connection(self.app))
        registry = FailedJobRegistry(queue=queue)
        failed = []
        for job_id in registry.get_job_ids():
            job = queue.fetch_job(job_id)
            result = job.latest_result() if job else None
            failed.append(f"{job_id} {job.func_name if job else '?'}: {result.exc_string if result else ''}")
        return failed


@dataclasses.dataclass
class LiveServer:
    url: str
    app: Flask
    worker: RQWorkerProcess

    def __call__(self, path: str = "/") -> str:
        return self.url + path


@pytest.fixture
def live_server(app, admin, tmp_path) -> Iterator[LiveServer]:
    """The app over HTTP on 127.0.0.1 (threaded werkzeug in the background) and an RQ worker for its queue."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    worker = RQWorkerProcess(app, tmp_path / "worker.log")
    worker.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, worker)
    finally:
        worker.stop()
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()


# ---------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the browser tests.

    Package-scoped rather than session-scoped: Playwright's sync API allows one
    instance per thread, and other test modules start their own.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (make system-packages installs it)")
    import playwright.sync_api as playwright_api
    playwright_api.expect.set_options(timeout=TIMEOUT_MS)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context_options() -> dict:
    """Options of ``page``'s browser context beyond the defaults; a test parametrizes it (e.g. a phone's screen)."""
    return {}


@pytest.fixture
def page(browser, live_server, request, tmp_path, context_options):
    """A new browser context (no cookies) and page on the live server; JS errors fail the test."""
    context = browser.new_context(**{
        "viewport": VIEWPORT, "base_url": live_server.url, "locale": "en-US", "timezone_id": "UTC",
        "color_scheme": "light", **context_options,
    })
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    tab = context.new_page()
    js_errors: list[str] = []
    tab.on("pageerror", lambda error: js_errors.append(f"{tab.url}: {error}"))
    # What the Content-Security-Policy blocked (an inline script, a foreign source) is an error too.
    tab.on("console", lambda message: js_errors.append(f"{tab.url}: {message.text}")
           if message.type == "error" and "Content Security Policy" in message.text else None)
    yield tab
    if getattr(request.node, "browser_call_failed", False):
        try:
            tab.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            (tmp_path / "failure.html").write_text(tab.content())
            print(f"\nbrowser state at failure: {tmp_path / 'failure.png'}, {tmp_path / 'failure.html'}")
            print(f"worker log ({live_server.worker.log_path}):\n{live_server.worker.log_tail()}")
        except Exception as exc:  # the page may be gone; the test's own error is what matters
            print(f"\ncould not save the failure screenshot: {exc}")
    context.close()
    assert not js_errors, f"uncaught JavaScript errors: {js_errors}"


@pytest.fixture
def admin_page(page):
    log_in(page)
    return page


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT_DIR
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def screenshot(page, screenshot_dir) -> Callable[..., Path]:
    """``screenshot(name)`` saves the viewport as ``name.png`` (stable names, so docs can link them)."""

    def take(name: str, full_page: bool = False) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        assert path.stat().st_size > 1000, f"screenshot {path} is empty"
        return path

    return take
