"""OAuth 2.0 tokens never leak: the secret-leak check of test_security.py, for access and refresh tokens.

Every token the provider hands out in the whole story (sign-in on the web and the CLI, syncs on a real
RQ worker, refreshes after expiry, a revoked sign-in, Reconnect) is recorded as it arrives, then looked
for (as text and in base64) in every page, the status JSON, the CLI output, Redis, the database, the
session cookie, the logs and stdout/stderr."""
from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from authlib.oauth2.client import OAuth2Client

from host_app.extensions import db
from host_app.models import Contact
from host_app.testing import ADMIN_PASSWORD, log_in, make_agent
from plugins.imap_inbox.models import ImapInbox
from tests.imap_inbox.test_imap_oauth import oauth_config
from tests.support.imap_helpers import message
from tests.support.redis_dump import redis_dump
from tests.system.test_security import _as_bytes, database_rows, leaks, route_urls, run_worker


def test_oauth_tokens_never_leak(crm_app_factory, oidc_provider, oauth_dovecot, redis_url, caplog, capfd,
                                 monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name in ("imapclient", "authlib", "urllib3", "requests", "rq", "werkzeug", "host_app", "plugins"):
        caplog.set_level(logging.DEBUG, logger=name)
    tokens: list[str] = []
    parse = OAuth2Client.parse_response_token

    def recording(self, resp):  # the real parser; every token the CRM is given is remembered
        token = parse(self, resp)
        tokens.extend(str(token[key]) for key in ("access_token", "refresh_token") if token.get(key))
        return token

    monkeypatch.setattr(OAuth2Client, "parse_response_token", recording)

    app = crm_app_factory(**oauth_config(oidc_provider))
    owner_id = make_agent(app, "admin@team.example", ADMIN_PASSWORD, admin=True, name="Ada Admin")
    admin = log_in(app.test_client(), "admin@team.example", ADMIN_PASSWORD)
    runner = app.test_cli_runner()
    artifacts: dict[str, bytes | str] = {}

    def keep(name: str, value) -> None:
        artifacts[f"{len(artifacts):03} {name}"] = value

    web_user, cli_user = "leak-web@team.example", "leak-cli@team.example"
    for user in (web_user, cli_user):
        oauth_dovecot.add_user(user, "unused-password-1")
        oauth_dovecot.append(user, "INBOX", message(1, to=user))

    # The web: sign in, confirm.
    start = admin.post("/settings/inboxes/oauth/oidc/new", data={
        "name": "Web", "owner_id": str(owner_id), "host": oauth_dovecot.host, "port": str(oauth_dovecot.imaps_port),
        "security": "ssl", "ca_file": oauth_dovecot.ca_file})
    back = urlsplit(oidc_provider.answer(start.headers["Location"], web_user))
    keep("web: callback", admin.get(f"{back.path}?{back.query}").get_data())
    keep("web: confirm page", admin.get("/settings/inboxes/oauth/confirm").get_data())
    keep("web: session cookie", str(admin.get_cookie("session").value))
    keep("web: connected", admin.post("/settings/inboxes/oauth/confirm", data={}).get_data())

    # The CLI: a refresh token on stdin.
    signed_in = oidc_provider.sign_in(cli_user)
    tokens.extend([signed_in["access_token"], signed_in["refresh_token"]])
    result = runner.invoke(input=signed_in["refresh_token"] + "\n", args=[
        "inboxes", "connect", "--name", "CLI", "--provider", "oidc", "--username", cli_user, "--refresh-token-stdin",
        "--owner", "admin@team.example", "--host", oauth_dovecot.host, "--port", str(oauth_dovecot.imaps_port),
        "--ca-file", oauth_dovecot.ca_file])
    assert result.exit_code == 0, result.output
    keep("cli: connect", result.output)

    # Syncs on a real worker; again once the access tokens expired; then a revoked sign-in.
    run_worker(app)
    time.sleep(oidc_provider.config["accessTokenTtl"] + 1)
    with app.app_context():
        ids = {inbox.name: inbox.id for inbox in db.session.scalars(db.select(ImapInbox))}
        db.session.remove()
    for inbox_id in ids.values():
        result = runner.invoke(args=["inboxes", "sync", str(inbox_id)])
        assert result.exit_code == 0, result.output
        keep("cli: sync", result.output)
    oidc_provider.revoke(signed_in["refresh_token"])
    result = runner.invoke(args=["inboxes", "sync", str(ids["CLI"])])
    assert result.exit_code == 1 and "sign in again" in result.output
    keep("cli: sync after revoking", result.output)

    # Reconnect on the web.
    reconnect = admin.post(f"/settings/inboxes/oauth/{ids['CLI']}/reconnect", data={})
    back = urlsplit(oidc_provider.answer(reconnect.headers["Location"], cli_user))
    keep("web: reconnect", admin.get(f"{back.path}?{back.query}").get_data())
    run_worker(app)
    with app.app_context():
        assert {i.name: i.status for i in db.session.scalars(db.select(ImapInbox))} == {"Web": "ok", "CLI": "ok"}
        contact = Contact(email="carla@customer.example", name="Carla", owner_id=owner_id)
        db.session.add(contact)
        db.session.commit()
        world = {"inbox_id": ids["CLI"], "contact_id": contact.id, "rule_id": 1, "entry_id": 1}
        db.session.remove()

    for _, _, url in route_urls(app, world, methods={"GET"}):
        response = admin.get(url)
        assert response.status_code < 500, url
        keep(f"page {url}", response.get_data())
    keep("status.json", admin.get("/settings/inboxes/status.json").get_data())
    for args in (["inboxes", "list", "--json"], ["inboxes", "list"]):
        keep("cli: " + " ".join(args), runner.invoke(args=args).output)
    for key, values in redis_dump(redis_url).items():
        for value in values:
            keep(f"redis {key}", value)
    for table, rows in database_rows(app).items():
        for row in rows:
            for column, value in row.items():
                if value is not None:
                    keep(f"db {table}.{column}", _as_bytes(value))
    keep("logs", caplog.text + "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}"
                                         for r in caplog.records))
    out, err = capfd.readouterr()
    keep("stdout", out)
    keep("stderr", err)

    # Code exchanges on the web (2), the CLI's sign-in, and refreshes after connecting and after expiry.
    assert len(set(tokens)) >= 8, f"only {len(set(tokens))} tokens were recorded"
    found = {name: len(leaked) for name, value in artifacts.items() if (leaked := leaks(value, secrets=set(tokens)))}
    assert found == {}, f"OAuth tokens leaked into: {sorted(found)}"
