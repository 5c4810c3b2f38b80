"""Reading an e-mail in Chromium: from the timeline to the message, its HTML in a sandboxed frame where no script
runs and no remote image loads until "Show images"."""
from __future__ import annotations

import datetime as dt
import http.server
import re
import threading

import pytest
from playwright.sync_api import expect

from host_app.extensions import db
from host_app.models import Contact
from plugins.imap_inbox.testing import mailgen
from tests.support.attachment_samples import NESTED_ATTACHMENTS, nested_message
from tests.support.imap_helpers import connect_inbox, make_owner, sync_when_free
from tests.support.mail_samples import CARLA, PIXEL_GIF, html_message, text_message

from .helpers import log_in


class _Tracker(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - the http.server name
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.send_header("Content-Length", str(len(PIXEL_GIF)))
        self.end_headers()
        self.wfile.write(PIXEL_GIF)

    def log_message(self, *args):
        pass


@pytest.fixture
def tracker():
    """A loopback web server standing in for a sender's tracking pixel host; it records every request."""
    _Tracker.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Tracker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _Tracker.hits
    server.shutdown()
    server.server_close()


def test_read_an_html_email_without_scripts_or_tracking_until_show_images(page, live_server, mailbox, tracker):
    tracker_url, hits = tracker
    app = live_server.app
    mailbox.append("INBOX", html_message(tracker_url))
    mailbox.append("INBOX", text_message())
    inbox_id = connect_inbox(app, mailbox, make_owner(app))
    assert sync_when_free(app, inbox_id)["status"] == "ok"
    with app.app_context():
        contact = Contact(email=CARLA, name="Carla Customer")
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id

    log_in(page)
    page.goto(f"/contacts/{contact_id}")
    page.get_by_role("link", name="Invoice 4711").click()
    expect(page).to_have_url(re.compile(r"/mail/messages/\d+$"))
    expect(page.get_by_role("heading", name="Invoice 4711")).to_be_visible()
    expect(page.locator(".mail-headers")).to_contain_text("Carla Customer <carla@customer.example>")
    expect(page.locator(".mail-attachments")).to_contain_text("Rechnung für März.pdf")

    frame_element = page.locator("iframe.mail-html")
    assert frame_element.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    frame = page.frame_locator("iframe.mail-html")
    expect(frame.get_by_text("invoice 4711")).to_be_visible()
    logo = frame.get_by_role("img", name="logo")
    expect(logo).to_be_visible()
    assert logo.evaluate("img => img.complete && img.naturalWidth") == 1  # the cid: image, from the message
    assert page.evaluate("() => window.pwned") is None
    # The pixel is not in the page at all, and the tracker never heard from us.
    expect(frame.get_by_role("img", name="pixel")).not_to_have_attribute("src", re.compile("open.gif"))
    page.wait_for_load_state("networkidle")
    assert hits == []

    page.get_by_role("link", name="Show images").click()
    frame = page.frame_locator("iframe.mail-html")
    pixel = frame.get_by_role("img", name="pixel")
    expect(pixel).to_have_attribute("src", f"{tracker_url}/open.gif?u=1")
    expect(pixel).to_have_js_property("complete", True)
    assert pixel.evaluate("img => img.naturalWidth") == 1
    assert any(hit.startswith("/open.gif") for hit in hits)
    assert page.evaluate("() => window.pwned") is None

    # On a phone the message, its frame and the timeline fit the screen's width.
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    page.goto(f"/contacts/{contact_id}")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("link", name="Plain order").click()
    link = page.locator(".mail-text").get_by_role("link", name="https://customer.example/track?id=9")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert "\n\n" in page.locator(".mail-text").inner_text()


def test_filter_the_timeline_and_open_an_attachment_list(page, live_server, mailbox):
    """Received and sent mail on one timeline: the filter shows one direction, the paperclip says how many
    files an e-mail has, and its page lists them from the stored list; one downloads under its safe name."""
    app = live_server.app
    app.config["TIMELINE_PER_PAGE"] = 2
    mailbox.append("INBOX", nested_message())
    mailbox.append("INBOX", text_message())
    mailbox.write("Sent", [mailgen.make_message(mailbox.username, [CARLA], f"Our answer {n}",
                                                message_id=f"<answer{n}@team.example>",
                                                date=dt.datetime(2024, 5, 10 + n, 9, tzinfo=dt.UTC))
                           for n in (1, 2)])
    inbox_id = connect_inbox(app, mailbox, make_owner(app))
    with app.app_context():
        contact = Contact(email=CARLA, name="Carla Customer")
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id
    assert sync_when_free(app, inbox_id)["status"] == "ok"
    live_server.worker.wait_until_idle()  # the follow-up jobs, the attachment listing among them

    log_in(page)
    page.goto(f"/contacts/{contact_id}")
    titles = page.locator(".timeline .entry-title")
    expect(titles).to_have_text([re.compile("Our answer 2"), re.compile("Our answer 1")])
    page.get_by_label("Show").select_option("in")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"direction=in"))
    expect(titles).to_have_text([re.compile("Quarterly figures"), re.compile("Plain order")])
    expect(page.locator(".badge.out")).to_have_count(0)
    paperclip = page.get_by_label("3 attachments")
    expect(paperclip).to_be_visible()
    page.get_by_role("link", name="Quarterly figures").click()
    attachments = page.get_by_role("region", name="Attachments")
    expect(attachments.get_by_role("heading")).to_have_text("Attachments (3)")
    expect(attachments.get_by_role("link")).to_have_text([name for _, name, _ in NESTED_ATTACHMENTS])
    with page.expect_download() as download:
        attachments.get_by_role("link", name="passwd.txt").click()
    assert download.value.suggested_filename == "passwd.txt"
