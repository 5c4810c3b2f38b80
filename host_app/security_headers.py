"""Security headers on every response and the flags of the session cookies (Flask-Talisman).

* Content-Security-Policy: scripts and styles from this site only, no inline scripts (forms ask
  "are you sure?" through static/confirm.js) and no inline styles, no framing (frame-ancestors 'none',
  X-Frame-Options DENY);
* X-Content-Type-Options nosniff, Referrer-Policy same-origin;
* session and remember-me cookies HttpOnly, SameSite=Lax and Secure, unless ``COOKIES_OVER_HTTP``
  (``CRM_COOKIES_OVER_HTTP=true``) says the CRM is reached over plain HTTP; ``manage.py run`` on a
  loopback address sets that for itself.
"""
from __future__ import annotations

from flask import Flask
from flask_talisman import Talisman

CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    # No inline styles either: every style is in the shipped stylesheets (tests/browser/test_every_page.py
    # fails on any style the policy blocks).
    "style-src": "'self'",
    "img-src": ["'self'", "data:"],
    "object-src": "'none'",
    "base-uri": "'self'",
    # Chromium applies form-action to the redirects after a POST too: "Sign in with ..." and Reconnect post
    # here and are redirected to the OAuth 2.0 server's (HTTPS) authorization page.
    "form-action": ["'self'", "https:"],
    "frame-ancestors": "'none'",
}

_OFF_WORDS = ("", "0", "false", "no", "off")


class _Talisman(Talisman):
    """Talisman that leaves a response's own Content-Security-Policy in place.

    A view that serves something other than a page of ours (an e-mail's cleaned HTML, shown in a sandboxed
    frame of our own page) sets a stricter policy of its own; Talisman would overwrite it with the site's.
    Framing by our own pages is then what that policy's frame-ancestors says, so X-Frame-Options follows it.
    """

    def _set_response_headers(self, response):
        own = response.headers.get("Content-Security-Policy")
        response = super()._set_response_headers(response)
        if own:
            response.headers["Content-Security-Policy"] = own
            if "frame-ancestors 'self'" in own:
                response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response


def over_http(app: Flask) -> bool:
    value = app.config.get("COOKIES_OVER_HTTP", False)
    if isinstance(value, str):
        return value.strip().lower() not in _OFF_WORDS
    return bool(value)


def init_app(app: Flask) -> None:
    secure = not over_http(app)
    _Talisman(
        app,
        force_https=False,  # TLS ends at the proxy in front (docs/deployment.md)
        strict_transport_security=True,  # sent on HTTPS requests only
        # Talisman would set SESSION_COOKIE_SECURE again on every request; the flags are set below instead,
        # so manage.py run can lift them for http://127.0.0.1.
        session_cookie_secure=False,
        session_cookie_http_only=True,
        session_cookie_samesite="Lax",
        content_security_policy=CONTENT_SECURITY_POLICY,
        frame_options="DENY",
        referrer_policy="same-origin",
    )
    app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["REMEMBER_COOKIE_SECURE"] = secure


def allow_cookies_over_http(app: Flask) -> None:
    """For ``manage.py run`` on this machine only, reached over http://127.0.0.1."""
    app.config["COOKIES_OVER_HTTP"] = True
    app.config["SESSION_COOKIE_SECURE"] = False
    app.config["REMEMBER_COOKIE_SECURE"] = False
