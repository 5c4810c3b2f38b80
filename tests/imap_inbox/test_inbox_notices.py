"""Notices about inboxes needing attention (the page_notices hook) and the owner's read-only "Your inboxes" page.

The inboxes fail for real: the password is changed on the real Dovecot and the sync job finds out.
"""
from __future__ import annotations

import html
import re

import sqlalchemy as sa

from host_app.extensions import db
from host_app.models import Agent
from host_app.testing import AGENT_PASSWORD, log_in, make_agent
from tests.support.imap_helpers import connect_inbox, sync
from tests.support.mailbox import Mailbox

NAME = "Zebra Desk"  # an inbox's name is for admins only
NEW_PASSWORD = "Changed-Pass-4242"
ADMIN_PAGES = ("/contacts/", "/settings/", "/automations/", "/mail/search?q=invoice", "/settings/inboxes/")
AGENT_PAGES = ("/contacts/", "/mail/search?q=invoice", "/inboxes/")
BANNER = re.compile(r'<div class="flash page-notice flash-error" role="status">(\d+) inbox(?:es)? needs? attention\. '
                    r'<a href="/settings/inboxes/">Connected inboxes</a></div>')


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", page))


def refuse_password(app, dovecot, mailbox, inbox_id: int) -> None:
    """The password changes at the provider; the next sync is refused and the inbox needs attention."""
    dovecot.add_user(mailbox.username, NEW_PASSWORD)
    assert sync(app, inbox_id)["status"] == "needs_attention"


def fix_password(admin_client, mailbox, inbox_id: int, owner_id: int) -> None:
    """An admin enters the new password on the inbox's edit page, as the banner leads them to."""
    response = admin_client.post(f"/settings/inboxes/{inbox_id}/edit", data={
        "name": NAME, "provider": "other", "host": mailbox.host, "port": str(mailbox.port), "security": "ssl",
        "username": mailbox.username, "password": NEW_PASSWORD, "ca_file": mailbox.ca_file,
        "owner_id": str(owner_id), "extra_folders": ""})
    assert response.status_code == 302, response.get_data(as_text=True)


def test_admins_see_a_banner_on_every_page_while_an_inbox_needs_attention(app, admin_client, agent, dovecot,
                                                                          mailbox):
    inbox_id = connect_inbox(app, mailbox, agent, name=NAME)
    for url in ADMIN_PAGES:
        assert "page-notice" not in admin_client.get(url).get_data(as_text=True), url

    refuse_password(app, dovecot, mailbox, inbox_id)
    for url in ADMIN_PAGES:
        page = admin_client.get(url).get_data(as_text=True)
        assert [int(n) for n in BANNER.findall(page)] == [1], url
        assert mailbox.password not in page and NEW_PASSWORD not in page

    fix_password(admin_client, mailbox, inbox_id, agent)
    for url in ADMIN_PAGES:
        assert "page-notice" not in admin_client.get(url).get_data(as_text=True), url


def test_the_banner_counts_the_inboxes_needing_attention(app, admin_client, agent, dovecot, mailbox):
    other = Mailbox(dovecot, f"second-{mailbox.username}", "second-secret-1")
    dovecot.add_user(other.username, other.password)
    first = connect_inbox(app, mailbox, agent, name=NAME)
    second = connect_inbox(app, other, None, name="Second")
    refuse_password(app, dovecot, mailbox, first)
    assert BANNER.findall(admin_client.get("/contacts/").get_data(as_text=True)) == ["1"]
    refuse_password(app, dovecot, other, second)
    assert BANNER.findall(admin_client.get("/contacts/").get_data(as_text=True)) == ["2"]


def test_the_owner_sees_what_to_do_and_their_inbox_s_status_others_see_nothing(app, admin_client, agent_client,
                                                                                agent, dovecot, mailbox):
    inbox_id = connect_inbox(app, mailbox, agent, name=NAME)
    address = mailbox.username.lower()
    make_agent(app, "other@team.example", AGENT_PASSWORD, name="Otto Other")
    other_client = log_in(app.test_client(), "other@team.example", AGENT_PASSWORD)
    assert sync(app, inbox_id)["status"] == "ok"

    page = text_of(agent_client.get("/inboxes/").get_data(as_text=True))
    assert "page-notice" not in page
    row = re.search(rf'<tr id="inbox-{inbox_id}".*?</tr>', page).group(0)
    assert address in row and ">OK<" in row and "just now" in row and "Nothing: it syncs by itself." in row

    refuse_password(app, dovecot, mailbox, inbox_id)
    for url in AGENT_PAGES:
        page = text_of(agent_client.get(url).get_data(as_text=True))
        notice = re.search(r'<div class="flash page-notice flash-error" role="status">(.*?)</div>', page).group(1)
        assert notice.startswith(f"Your inbox {address} needs attention: The server rejected the user name or "
                                 "password (server said: "), url
        assert notice.endswith("). Ask an admin to update the inbox's settings: until then no new mail arrives "
                               'from it. <a href="/inboxes/">Your inboxes</a>'), url
        assert NAME not in page and mailbox.password not in page and NEW_PASSWORD not in page, url
        assert '<a href="/settings/inboxes' not in page and mailbox.host not in page, url

    page = text_of(agent_client.get("/inboxes/").get_data(as_text=True))
    row = re.search(rf'<tr id="inbox-{inbox_id}".*?</tr>', page).group(0)
    assert ">Needs attention<" in row and "The server rejected the user name or password" in row
    assert "Ask an admin to update the inbox's settings" in row and "just now" in row

    for url in AGENT_PAGES:
        page = other_client.get(url).get_data(as_text=True)
        assert "page-notice" not in page and address not in page and NAME not in page, url
    assert "You own no connected inbox." in other_client.get("/inboxes/").get_data(as_text=True)

    fix_password(admin_client, mailbox, inbox_id, agent)
    page = text_of(agent_client.get("/inboxes/").get_data(as_text=True))
    assert "page-notice" not in page and "Queued, starting soon" in page


def test_the_owners_page_needs_a_sign_in(client):
    response = client.get("/inboxes/")
    assert response.status_code == 302 and "/login" in response.location


def test_one_query_per_page_for_admins_and_owners(app, admin, agent, dovecot, mailbox):
    """The hook runs on every page: one small query, whoever asks."""
    from plugins.imap_inbox.notices import page_notices

    refuse_password(app, dovecot, mailbox, connect_inbox(app, mailbox, agent, name=NAME))
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with app.test_request_context("/contacts/"):
        admin_row, agent_row = db.session.get(Agent, admin), db.session.get(Agent, agent)
        sa.event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert len(page_notices(admin_row)) == 1
            assert len(statements) == 1
            assert len(page_notices(agent_row)) == 1
            assert len(statements) == 2
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", count)
