"""Every page of the app, with real data, on a phone (375x812) and on a laptop, in Chromium.

The data is real: a Dovecot mailbox connected and synced by the worker, a contact whose timeline shows its
e-mails, automations with a run log and a run by hand. On each page:

* the page is no wider than the screen (``document.documentElement.scrollWidth``);
* every control a person can reach (links, buttons, fields) lies inside the screen once scrolled to, and a
  click at its centre lands on it (nothing covers it); a wide table may scroll inside its own box;
* the page's key controls (the header's, the page's main action) are visible and clickable;
* the Content-Security-Policy blocked nothing (``securitypolicyviolation`` events, console messages): the
  pages need no inline script and no inline style.

``PAGES`` lists the pages by URL rule and ``NOT_PAGES`` the GET routes that are not pages (JSON, files); a
GET route in neither fails ``test_every_get_route_is_walked``, so a new page cannot be missed.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from host_app import bulk_runs
from host_app.extensions import db
from host_app.models import Agent, AutomationBulkRun, AutomationRule, AutomationRun, Contact
from plugins.mail.models import Message
from tests.support.imap_helpers import connect_inbox, message, sync_when_free
from tests.support.mail_samples import CARLA, base_message, html_message, text_message
from tests.support.reliability_helpers import wait_for

from .helpers import ADMIN_EMAIL, create_contact, log_in

PHONE = {"width": 375, "height": 812}
LAPTOP = {"width": 1280, "height": 800}
SCREENS = {
    "phone": {"viewport": PHONE, "is_mobile": True, "has_touch": True, "device_scale_factor": 2},
    "laptop": {"viewport": LAPTOP},
}
LONG_SUBJECT = "Order confirmation " + "ORD-2024-0000000000000000000000000000000000000000000000000000000042"
LONG_SENDER = f"Carla Customer-Longname-Worthington of the Very Long Customer Company Limited <{CARLA}>"
LONG_ADDRESS = ("Bartholomew Longname-Worthington "
                "<bartholomew.longname-worthington.orders@very-long-customer-domain.example>")


@dataclasses.dataclass
class Data:
    contact_id: int
    inbox_id: int
    html_message_id: int
    text_message_id: int
    long_message_id: int
    event_rule_id: int
    manual_rule_id: int
    bulk_run_id: int


@dataclasses.dataclass
class Visit:
    path: str
    controls: tuple[tuple[str, str], ...] = ()  # (ARIA role, accessible name) of the page's key controls
    status: int = 200


def _pages(d: Data) -> dict[str, list[Visit]]:
    """The pages to walk, by URL rule (``app.url_map``), with their key controls."""
    return {
        "/": [Visit("/", (("link", "New contact"),))],
        "/login": [],  # walked logged out, first
        "/contacts/": [
            Visit("/contacts/", (("button", "Search"), ("link", "New contact"), ("link", "Carla Customer")))],
        "/contacts/new": [Visit("/contacts/new", (("button", "Save"),))],
        "/contacts/<int:contact_id>": [
            Visit(f"/contacts/{d.contact_id}", (("link", "Edit"), ("link", LONG_SUBJECT), ("link", "Invoice 4711"))),
            Visit("/contacts/999999", status=404),  # the error page
        ],
        "/contacts/<int:contact_id>/edit": [Visit(f"/contacts/{d.contact_id}/edit", (("button", "Save"),))],
        "/mail/messages/<int:message_id>": [
            Visit(f"/mail/messages/{d.html_message_id}", (("link", "Show images"),)),
            Visit(f"/mail/messages/{d.text_message_id}", (("link", "https://customer.example/track?id=9"),)),
            Visit(f"/mail/messages/{d.long_message_id}"),
        ],
        "/mail/search": [
            Visit("/mail/search?q=invoice", (("button", "Search"), ("link", "Invoice 4711"))),
            Visit(f"/mail/search?q=invoice&contact={d.contact_id}", (("button", "Search"),)),
        ],
        "/automations/": [Visit("/automations/", (("link", "New automation"), ("link", "Run log"),
                                                  ("link", re.compile("^Run now: "))))],
        "/automations/new": [Visit("/automations/new", (("button", "Add condition"), ("button", "Save automation")))],
        "/automations/<int:rule_id>": [
            Visit(f"/automations/{d.event_rule_id}", (("button", "Remove condition"), ("button", "Save automation"))),
            Visit(f"/automations/{d.manual_rule_id}", (("link", "Run now"), ("button", "Save automation"))),
        ],
        "/automations/<int:rule_id>/run": [Visit(f"/automations/{d.manual_rule_id}/run", (("button", "Preview"),))],
        "/automations/bulk-runs/<int:run_id>": [Visit(f"/automations/bulk-runs/{d.bulk_run_id}")],
        "/automations/runs": [Visit("/automations/runs")],
        "/inboxes/": [Visit("/inboxes/")],
        "/settings/": [Visit("/settings/", (("link", re.compile("^Connected inboxes")),))],
        "/settings/agents": [Visit("/settings/agents", (("button", re.compile("^Sign out everywhere: ")),))],
        "/settings/plugins": [Visit("/settings/plugins")],
        "/settings/contacts-import/": [Visit("/settings/contacts-import/", (("button", "Block"),))],
        "/settings/inboxes/": [Visit("/settings/inboxes/", (
            ("link", "Connect via IMAP"), ("button", re.compile("^Sync now: ")), ("link", re.compile("^Edit: ")),
            ("link", re.compile("^Delete: .*…$"))))],
        "/settings/inboxes/new": [Visit("/settings/inboxes/new", (("button", "Create IMAP"),))],
        "/settings/inboxes/<int:inbox_id>/edit": [Visit(f"/settings/inboxes/{d.inbox_id}/edit", (("button", "Save"),))],
        "/settings/inboxes/<int:inbox_id>/delete": [
            Visit(f"/settings/inboxes/{d.inbox_id}/delete", (("button", "Delete inbox and its e-mails"),))],
        "/settings/inboxes/<int:inbox_id>/resync": [
            Visit(f"/settings/inboxes/{d.inbox_id}/resync", (("button", "Read the mailbox again"),))],
        "/settings/inboxes/oauth/<any(google, microsoft, oidc):provider_key>/new": [
            # No OAuth client is configured here: the page says so and offers the password form.
            Visit(f"/settings/inboxes/oauth/{key}/new", (("link", "connect via IMAP with a password"),
                                                        ("link", "Cancel")))
            for key in ("google", "microsoft", "oidc")],
        "/settings/inboxes/oauth/callback": [
            Visit("/settings/inboxes/oauth/callback", (("link", "Back to Connected inboxes"),))],
        "/settings/inboxes/oauth/confirm": [
            Visit("/settings/inboxes/oauth/confirm", (("link", "Back to Connected inboxes"),))],
    }


# GET routes that are not pages a person looks at, and where they are checked instead.
NOT_PAGES = {
    "/static/<path:filename>": "files",
    "/favicon.ico": "the icon, for browsers that ask for it (tests/host/test_favicon.py)",
    "/mail/static/<path:filename>": "files",
    "/settings/inboxes/static/imap_inbox/<path:filename>": "files",
    "/mail/messages/<int:message_id>/body": "the e-mail's frame, checked inside the message page",
    "/mail/messages/<int:message_id>/attachments/<section>": "a download (tests/browser/test_mail_viewer.py)",
    "/automations/bulk-runs/<int:run_id>.json": "JSON for the run's progress bar",
    "/settings/inboxes/status.json": "JSON for the inbox list",
    "/settings/contacts-import/inboxes/<int:inbox_id>/progress.json": "JSON for the import's progress bar",
}

# A control that is there is clickable at once; waiting longer only hides a control that something covers.
CONTROL_TIMEOUT_MS = 3_000
HEADER_CONTROLS = (("link", "Contacts"), ("link", "Automations"), ("link", "Settings"), ("button", "Log out"))

# Installed before any script of the page: what the Content-Security-Policy blocks, as the page saw it.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`));
"""

# Every control a person can reach: inside the screen once scrolled to (a wide table may scroll in its own
# box), and a tap at its centre lands on it. Returns what is wrong, in words.
UNREACHABLE_CONTROLS = """
(width) => {
  // The screen's width, not innerWidth: a phone zooms out a page wider than the screen, widening innerWidth.
  const height = window.innerHeight, problems = [];
  const describe = (el) => el ? `<${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${el.className ?
      "." + String(el.className).trim().split(/\\s+/).join(".") : ""}> "${(el.innerText || el.value || el.name ||
      el.getAttribute("aria-label") || "").trim().slice(0, 40)}"` : "nothing";
  const controls = document.querySelectorAll(
    "a[href], button, input:not([type=hidden]), select, textarea, summary, iframe, progress");
  for (const el of controls) {
    if (!el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;
    if (el.closest(".visually-hidden")) continue;
    el.scrollIntoView({block: "center", inline: "nearest"});
    const box = el.getClientRects()[0];
    if (box.left < -0.5 || box.right > width + 0.5) {
      problems.push(`${describe(el)} is cut off: it spans ${Math.round(box.left)}..${Math.round(box.right)} px ` +
                    `of a ${width} px screen`);
      continue;
    }
    if (box.width < 1 || box.height < 1) { problems.push(`${describe(el)} has no size`); continue; }
    const x = box.left + box.width / 2, y = Math.min(Math.max(box.top + box.height / 2, 0), height - 1);
    const hit = document.elementFromPoint(x, y);
    if (!(hit && (hit === el || el.contains(hit)))) problems.push(`${describe(el)} is covered by ${describe(hit)}`);
  }
  window.scrollTo(0, 0);
  return problems;
}
"""


def test_every_get_route_is_walked(app):
    """A new page must be added to PAGES (or, if it is not a page, to NOT_PAGES) to be checked on a phone."""
    d = Data(*range(1, len(dataclasses.fields(Data)) + 1))
    listed = set(_pages(d)) | set(NOT_PAGES)
    routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    assert sorted(routes - listed) == [], "GET routes neither walked in PAGES nor explained in NOT_PAGES"
    assert sorted(listed - routes) == [], "PAGES or NOT_PAGES name routes the app no longer has"
    assert not set(_pages(d)) & set(NOT_PAGES)


def _seed(page: Page, live_server, mailbox) -> Data:
    """Real data behind every page: a synced mailbox, a contact with e-mails, automations that ran."""
    app = live_server.app
    long_mail = base_message(LONG_SUBJECT, "long1@customer.example", 3, sender=LONG_SENDER)
    long_mail.replace_header("To", f"Team <team@team.example>, {LONG_ADDRESS}")
    long_mail.set_content("See https://customer.example/orders/" + "x" * 150 + " and reply.\n" + "word " * 200)
    mailbox.append("INBOX", html_message())
    mailbox.append("INBOX", text_message())
    mailbox.append("INBOX", long_mail.as_bytes())
    mailbox.append("Sent", message(1, sender=f"Team <{mailbox.username}>", to=f"Carla Customer <{CARLA}>",
                                   subject="Re: Plain order", in_reply_to="<text1@customer.example>"))
    with app.app_context():
        event_rule = AutomationRule(
            name="Welcome new contacts", trigger="contact_created", match="all",
            conditions=[{"key": "has_tag", "params": {"tag": "customer"}}],
            actions=[{"key": "add_tag", "params": {"tag": "welcomed"}}])
        manual_rule = AutomationRule(
            name="Follow up customers with a rather long automation name that has to wrap on a phone",
            trigger="manual", match="all", conditions=[{"key": "has_tag", "params": {"tag": "customer"}}],
            actions=[{"key": "add_tag", "params": {"tag": "follow-up"}}])
        db.session.add_all([event_rule, manual_rule])
        db.session.commit()
        rule_ids = event_rule.id, manual_rule.id
        # Owned by the admin who walks the pages, so that Your inboxes shows its row.
        admin_id = db.session.scalar(db.select(Agent.id).where(Agent.email == ADMIN_EMAIL))
    inbox_id = connect_inbox(app, mailbox, admin_id, name="Sales desk with a long name for the table")
    assert sync_when_free(app, inbox_id)["status"] == "ok"

    log_in(page)
    create_contact(page, CARLA, name="Carla Customer", tags="customer, berlin")
    live_server.worker.wait_until_idle()
    with app.app_context():
        contact_id = db.session.scalar(db.select(Contact.id).where(Contact.email == CARLA))
        assert db.session.scalar(db.select(AutomationRun).where(AutomationRun.rule_id == rule_ids[0])) is not None
        run = bulk_runs.start(db.session.get(AutomationRule, rule_ids[1]), "all:")
        run_id = run.id
        ids = {m.subject: m.id for m in db.session.scalars(db.select(Message))}

    def run_status() -> str:
        with app.app_context():
            return db.session.get(AutomationBulkRun, run_id).status

    wait_for(lambda: run_status() not in ("queued", "running"), 60, "the run by hand to finish",
             details=live_server.worker.log_tail)
    assert run_status() == "done"
    assert live_server.worker.failed_jobs() == []
    return Data(contact_id=contact_id, inbox_id=inbox_id, html_message_id=ids["Invoice 4711"],
                text_message_id=ids["Plain order"], long_message_id=ids[LONG_SUBJECT], event_rule_id=rule_ids[0],
                manual_rule_id=rule_ids[1], bulk_run_id=run_id)


def _last_interceptor(log: str) -> str:
    covering = [line.strip(" -") for line in log.splitlines() if "intercepts pointer events" in line]
    return covering[-1] if covering else "it never became visible and enabled"


def _check_page(page: Page, visit: Visit, width: int, header: bool, console_csp: list[str]) -> list[str]:
    """What is wrong with the page at ``visit.path``, in words (empty when nothing is)."""
    where = visit.path
    response = page.goto(visit.path)
    assert response is not None and response.status == visit.status, f"{where}: status {response.status}"
    expect(page.locator("h1").first).to_be_visible()
    problems = []
    page_width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    if page_width[0] > width or page_width[0] > page_width[1]:
        problems.append(f"the page is {page_width[0]} px wide on a {width} px screen")
    frame = page.frame_locator("iframe.mail-html")
    if page.locator("iframe.mail-html").count():
        expect(frame.locator("body")).to_be_visible()
        frame_width = page.frames[1].evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if frame_width[0] > frame_width[1]:
            problems.append(f"the e-mail in its frame is {frame_width[0]} px wide in a {frame_width[1]} px frame")
    controls = (HEADER_CONTROLS if header else ()) + visit.controls
    for role, name in controls:
        scope = page.locator("header") if (role, name) in HEADER_CONTROLS else page.locator("main")
        control = scope.get_by_role(role, name=name, exact=True).first
        try:
            # Visible, stable, enabled, and a click would land on it (nothing covers it).
            control.click(trial=True, timeout=CONTROL_TIMEOUT_MS)
        except PlaywrightError as exc:
            problems.append(f"{role} {name!r} cannot be clicked: {exc.message.splitlines()[0]}, "
                            f"{_last_interceptor(exc.message)}")
            continue
        box = control.bounding_box()
        if box["x"] < 0 or box["x"] + box["width"] > width + 0.5:
            problems.append(f"{role} {name!r} is cut off at {box['x']:.0f}..{box['x'] + box['width']:.0f} px")
    problems += page.evaluate(UNREACHABLE_CONTROLS, width)
    problems += page.evaluate("() => window.__cspViolations")
    problems += console_csp
    console_csp.clear()
    return [f"{where}: {problem}" for problem in problems]


@pytest.mark.parametrize("context_options", list(SCREENS.values()), ids=list(SCREENS))
def test_every_page_fits_the_screen_with_its_controls_in_reach_and_no_csp_violation(
        page, live_server, mailbox, context_options, screenshot):
    width = context_options["viewport"]["width"]
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    console_csp: list[str] = []
    page.on("console", lambda m: console_csp.append(m.text) if "Content Security Policy" in m.text else None)

    problems = _check_page(page, Visit("/login", (("button", "Log in"),)), width, False, console_csp)
    data = _seed(page, live_server, mailbox)
    pages = _pages(data)
    visits = [visit for rule in pages for visit in pages[rule]]
    for visit in visits:
        problems += _check_page(page, visit, width, True, console_csp)
    # The one page behind a POST: disabling a plugin others need asks first (and changes nothing yet).
    page.goto("/settings/plugins")
    mail_row = page.locator("tr").filter(has=page.locator("td:first-child strong", has_text=re.compile("^mail$")))
    try:
        mail_row.get_by_role("button", name="Disable").click(timeout=CONTROL_TIMEOUT_MS)
    except PlaywrightError as exc:
        problems.append(f"/settings/plugins: Disable mail cannot be clicked: {_last_interceptor(exc.message)}")
    else:
        expect(page.get_by_role("button", name="Disable mail")).to_be_visible()
        problems += page.evaluate(UNREACHABLE_CONTROLS, width) + page.evaluate("() => window.__cspViolations")
        problems += console_csp

    if width == PHONE["width"]:
        for name, path in (("phone_timeline", f"/contacts/{data.contact_id}"),
                           ("phone_inboxes", "/settings/inboxes/"),
                           ("phone_message", f"/mail/messages/{data.html_message_id}")):
            page.goto(path)
            screenshot(name, full_page=True)
    assert problems == [], "\n".join(problems)
