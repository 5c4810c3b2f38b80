"""What a person does in the browser, as functions: log in, create a contact, connect an inbox, wait for a sync."""
from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from host_app.testing import ADMIN_PASSWORD

# Generous: the CI machine has two cores and a sync runs alongside the browser.
TIMEOUT_MS = 30_000
SYNC_TIMEOUT_MS = 120_000

ADMIN_EMAIL = "admin@team.example"  # the `admin` fixture of host_app.testing
AGENT_EMAIL = "agent@team.example"  # the `agent` fixture
OWNER_LABEL = f"Ada Admin <{ADMIN_EMAIL}>"


def log_in(page: Page, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    """Log in through the login form and wait for the logged-in top bar."""
    page.goto("/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def create_contact(page: Page, email: str, name: str = "", tags: str = "") -> None:
    page.goto("/contacts/new")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Tags").fill(tags)
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Contact created.")).to_be_visible()


def fill_server_fields(page: Page, mailbox, password: str) -> None:
    """Host, username, password, security, port and CA file of the test Dovecot account."""
    page.get_by_label("Host name").fill(mailbox.host)
    page.get_by_label("Username").fill(mailbox.username)
    page.get_by_label("Password or app password").fill(password)
    page.get_by_label("Security").select_option("ssl")
    page.get_by_label("Port").fill(str(mailbox.port))
    page.get_by_label("CA file").fill(mailbox.ca_file)


def connect_inbox(page: Page, mailbox, name: str = "Support", create_users: bool = False) -> Locator:
    """Connect the account with the "Connect via IMAP" form; returns the inbox's row on the list page."""
    page.goto("/settings/inboxes/new")
    page.get_by_label("Name", exact=True).fill(name)
    fill_server_fields(page, mailbox, mailbox.password)
    page.get_by_label("Owner").select_option(label=OWNER_LABEL)
    if create_users:
        page.get_by_label("Create users").check()
    page.get_by_role("button", name="Create IMAP").click()
    expect(page.locator(".flash-success")).to_contain_text(f"Connected to {mailbox.username}")
    return inbox_row(page, name)


def inbox_row(page: Page, name: str) -> Locator:
    return page.locator("tr.inbox-row").filter(has=page.locator("strong", has_text=name))


def wait_for_sync_ok(row: Locator, messages: int) -> None:
    """Wait, on the list page and without reloading it, until the row says OK with ``messages`` e-mails."""
    expect(row.locator("[data-role=label]")).to_have_text("OK", timeout=SYNC_TIMEOUT_MS)
    expect(row.locator("[data-role=message-count]")).to_have_text(f"{messages:,}")
    expect(row.locator("[data-role=progress]")).to_be_hidden()
    expect(row.locator("[data-role=error]")).to_be_hidden()
    expect(row.locator("[data-role=last-synced]")).to_have_text(re.compile(r"^(just now|\d+ min ago)$"))
