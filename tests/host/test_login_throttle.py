"""Login throttling, on the real Redis: per account and per client address, with growing delays, shared by
every web worker, and failed logins logged without the password."""
from __future__ import annotations

import logging
import time

from redis import Redis

from host_app.testing import ADMIN_PASSWORD, make_agent

WRONG = "Wr0ng-Gue55-Pa55"
EMAIL = "admin@team.example"


def attempt(client, password: str, email: str = EMAIL, address: str = "198.51.100.7"):
    return client.post("/login", data={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_wrong_passwords_are_throttled_per_account_and_the_right_one_waits_too(crm_app_factory, caplog):
    app = crm_app_factory()
    make_agent(app, EMAIL, ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    caplog.set_level(logging.WARNING)
    for _ in range(5):
        response = attempt(client, WRONG)
        assert response.status_code == 200 and "Wrong e-mail or password." in response.text

    refused = attempt(client, ADMIN_PASSWORD)  # the right one, but too late
    assert refused.status_code == 429
    assert "Too many attempts. Try again in 1 minute." in refused.text
    assert client.get("/").status_code == 302  # not logged in

    # Another web worker (another app on the same Redis) and another client address: the account waits.
    other_worker = crm_app_factory().test_client()
    assert attempt(other_worker, ADMIN_PASSWORD, address="203.0.113.9").status_code == 429
    assert Redis.from_url(app.config["REDIS_URL"]).keys("*crm-login-failures*")

    failures = [r.getMessage() for r in caplog.records if "failed login" in r.getMessage()]
    assert len(failures) == 5 and all(EMAIL in line and "198.51.100.7" in line for line in failures)
    assert WRONG not in caplog.text and ADMIN_PASSWORD not in caplog.text


def test_one_client_address_trying_many_accounts_is_throttled(crm_app_factory):
    app = crm_app_factory(LOGIN_ADDRESS_LIMITS="8 per minute")
    make_agent(app, EMAIL, ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    for n in range(8):
        assert attempt(client, WRONG, email=f"guess{n}@team.example").status_code == 200
    assert attempt(client, ADMIN_PASSWORD).status_code == 429
    # The same account from elsewhere is not held up by that address.
    assert attempt(app.test_client(), ADMIN_PASSWORD, address="203.0.113.9").status_code == 302


def test_the_delay_grows_with_more_failures(crm_app_factory):
    app = crm_app_factory(LOGIN_ACCOUNT_LIMITS="3 per 8 seconds; 5 per hour")
    make_agent(app, EMAIL, ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    for _ in range(3):
        attempt(client, WRONG)
    assert "Try again in 1 minute." in attempt(client, ADMIN_PASSWORD).text
    time.sleep(8.5)  # the short window has passed
    for _ in range(2):
        assert attempt(client, WRONG).status_code == 200
    refused = attempt(client, ADMIN_PASSWORD)
    assert refused.status_code == 429 and "Try again in 60 minutes." in refused.text


def test_a_successful_login_is_not_counted_and_clears_the_accounts_failures(crm_app_factory):
    app = crm_app_factory(LOGIN_ACCOUNT_LIMITS="3 per hour")
    make_agent(app, EMAIL, ADMIN_PASSWORD, admin=True)
    for _ in range(2):
        attempt(app.test_client(), WRONG)
    for _ in range(5):
        assert attempt(app.test_client(), ADMIN_PASSWORD).status_code == 302
    for _ in range(2):
        assert attempt(app.test_client(), WRONG).status_code == 200  # counting starts again
    assert attempt(app.test_client(), ADMIN_PASSWORD).status_code == 302
