"""Security headers on every page and the flags of the login cookies in production configuration."""
from __future__ import annotations

import re
from pathlib import Path

from host_app.testing import ADMIN_PASSWORD, make_agent


def cookie_headers(response, name: str) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}="))


def test_login_cookies_are_secure_samesite_and_httponly_in_production(crm_app_factory):
    app = crm_app_factory(COOKIES_OVER_HTTP=False)  # what production has: the setting is off by default
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    response = app.test_client().post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD,
                                                      "remember": "y"}, base_url="https://crm.example")
    assert response.status_code == 302
    for name in ("session", "remember_token"):
        header = cookie_headers(response, name)
        assert "; Secure" in header and "; HttpOnly" in header and "SameSite=Lax" in header, header


def test_cookies_over_plain_http_only_when_configured(crm_app_factory):
    app = crm_app_factory(COOKIES_OVER_HTTP="true")
    make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True)
    response = app.test_client().post("/login", data={"email": "admin@team.example", "password": ADMIN_PASSWORD,
                                                      "remember": "y"})
    for name in ("session", "remember_token"):
        header = cookie_headers(response, name)
        assert "; Secure" not in header and "; HttpOnly" in header and "SameSite=Lax" in header, header


def test_every_page_carries_the_security_headers(admin_client):
    for path in ("/login", "/contacts/", "/automations/", "/settings/inboxes/"):
        response = admin_client.get(path)
        csp = response.headers["Content-Security-Policy"]
        directives = {part.split()[0]: part.split()[1:] for part in csp.split("; ")}
        assert directives["script-src"] == ["'self'"], csp
        assert directives["style-src"] == ["'self'"], csp  # no 'unsafe-inline': the pages need no inline style
        assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"], csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"


def test_no_template_carries_an_inline_style():
    """The policy allows no inline style: a style="..." or <style> in any template (host or plugin), even in a
    branch the browser walk does not reach, would be blocked in the browser."""
    root = Path(__file__).resolve().parents[2]
    templates = [*root.glob("host_app/templates/**/*.html"), *root.glob("plugins/*/templates/**/*.html")]
    assert len(templates) > 20
    inline = re.compile(r"<style\b|\sstyle\s*=", re.IGNORECASE)
    found = [f"{path.relative_to(root)}:{n}" for path in templates
             for n, line in enumerate(path.read_text().splitlines(), 1) if inline.search(line)]
    assert found == []
