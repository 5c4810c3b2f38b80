"""Sessions end when they should: logout and a new password end every session and remember-me cookie of the
agent, copied ones included; remember-me cookies differ per login and last two weeks; admins sign agents out
everywhere and deactivate them; the CSRF token changes at login."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from host_app.extensions import db
from host_app.models import Agent
from host_app.testing import ADMIN_PASSWORD, AGENT_PASSWORD, log_in

AGENT_EMAIL = "agent@team.example"


def copy_of(app, client, names=("session", "remember_token")):
    """Another browser holding the cookies ``client`` has now (what a thief would copy)."""
    thief = app.test_client()
    for name in names:
        cookie = client.get_cookie(name)
        if cookie is not None:
            thief.set_cookie(name, cookie.value)
    return thief


def signed_in(client) -> bool:
    return client.get("/contacts/").status_code == 200


def remember_login(app, email=AGENT_EMAIL, password=AGENT_PASSWORD):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": password, "remember": "y"})
    assert response.status_code == 302
    return client, response


def test_a_copied_session_cookie_ends_with_logout(app, agent):
    client = log_in(app.test_client(), AGENT_EMAIL, AGENT_PASSWORD)
    thief = copy_of(app, client, names=("session",))
    assert signed_in(thief)
    client.post("/logout")
    assert not signed_in(client)
    assert not signed_in(thief)


def test_remember_me_differs_per_login_lasts_two_weeks_and_ends_with_logout(app, agent):
    first, response = remember_login(app)
    cookie_header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("remember_token="))
    expires = datetime.strptime(re.search(r"Expires=([^;]+)", cookie_header).group(1), "%a, %d %b %Y %H:%M:%S GMT")
    lifetime = expires.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(days=13) < lifetime <= timedelta(days=14, minutes=1)
    assert "HttpOnly" in cookie_header

    second, _ = remember_login(app)
    assert first.get_cookie("remember_token").value != second.get_cookie("remember_token").value

    only_remembered = copy_of(app, first, names=("remember_token",))
    assert signed_in(only_remembered)  # the cookie alone signs in (a fresh browser session)
    second.post("/logout")
    for client in (first, copy_of(app, first, names=("remember_token",)), second):
        assert not signed_in(client)


def test_a_new_password_ends_every_session_and_remember_me(app, agent, runner):
    remembered, _ = remember_login(app)
    session_only = log_in(app.test_client(), AGENT_EMAIL, AGENT_PASSWORD)
    result = runner.invoke(args=["agents", "password", AGENT_EMAIL, "--password-stdin"], input="a-new-password-2\n")
    assert result.exit_code == 0, result.output
    assert not signed_in(remembered) and not signed_in(copy_of(app, remembered, names=("remember_token",)))
    assert not signed_in(session_only)
    assert signed_in(log_in(app.test_client(), AGENT_EMAIL, "a-new-password-2"))


def test_admins_sign_agents_out_everywhere_and_deactivate_them(app, admin, agent, admin_client):
    remembered, _ = remember_login(app)
    assert "Sign out everywhere" in admin_client.get("/settings/agents").text
    response = admin_client.post(f"/settings/agents/{agent}/sign-out")
    assert response.status_code == 302
    assert not signed_in(remembered) and not signed_in(copy_of(app, remembered, names=("remember_token",)))

    again = log_in(app.test_client(), AGENT_EMAIL, AGENT_PASSWORD)
    admin_client.post(f"/settings/agents/{agent}/deactivate")
    assert not signed_in(again)
    refused = app.test_client().post("/login", data={"email": AGENT_EMAIL, "password": AGENT_PASSWORD})
    assert refused.status_code == 200 and "Wrong e-mail or password." in refused.text
    with app.app_context():
        assert db.session.get(Agent, agent).active is False
    # Admins cannot lock themselves out.
    admin_client.post(f"/settings/agents/{admin}/deactivate")
    with app.app_context():
        assert db.session.get(Agent, admin).active is True


def test_agents_cannot_sign_others_out(app, admin, agent_client):
    assert agent_client.post(f"/settings/agents/{admin}/sign-out").status_code == 403


def test_the_csrf_token_changes_at_login(crm_app_factory):
    app = crm_app_factory(WTF_CSRF_ENABLED=True)
    from host_app.testing import make_agent

    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    client = app.test_client()
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    with client.session_transaction() as session:
        before = session["csrf_token"]
    response = client.post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD,
                                           "csrf_token": token})
    assert response.status_code == 302
    client.get("/contacts/new")  # a page with a form makes the new token
    with client.session_transaction() as session:
        assert session["csrf_token"] != before
    # A form token made before the login no longer passes (CSRFProtect answers 400 before the view runs) ...
    planted = client.post("/contacts/new", data={"csrf_token": token, "email": "x@example.org", "name": "X"})
    assert planted.status_code == 400 and "CSRF" in planted.text
    # ... while the token of a form shown after the login does: the same post with it creates the contact.
    fresh = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/contacts/new").text).group(1)
    assert fresh != token
    created = client.post("/contacts/new", data={"csrf_token": fresh, "email": "x@example.org", "name": "X"})
    assert created.status_code == 302, created.text
