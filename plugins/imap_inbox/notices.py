"""What admins and inbox owners are told on every page about inboxes that need attention (``page_notices``).

Admins see how many inboxes need attention, linking to Connected inboxes where they fix them. The owner of
one sees it by its address (never its name, which is for admins only), with the error the sync stored,
which is plain words without secrets (connection.ImapConnectError), and what to do about it.

The hook runs on every page, so it asks one small query: a count for admins, the agent's own inboxes needing
attention for the others (``mail_inbox.owner_id`` is indexed; a team has few inboxes). Not cached: the banner
must go as soon as an admin fixes the inbox, on whichever worker serves the next page.
"""
from __future__ import annotations

from flask import url_for

from host_app.api import PageNotice, db
from plugins.mail import models as mail_models
from plugins.mail.models import Inbox

from .models import TRANSPORT

# What the owner of an inbox can do about its status, in plain words; nothing for the statuses not here.
OWNER_ADVICE = {
    mail_models.NEEDS_ATTENTION: "Ask an admin to update the inbox's settings: until then no new mail arrives "
                                 "from it.",
    mail_models.ERROR: "Nothing to do: the CRM tries again by itself.",
    mail_models.DISABLED: "An admin turned its sync off; ask one to turn it on again if you need its new mail.",
}

_ERROR_SHOWN_CHARS = 300  # the server's words can be long; the owner's page shows them whole


def page_notices(agent) -> list[PageNotice]:
    if agent.is_admin:
        count = db.session.scalar(db.select(db.func.count()).select_from(Inbox).where(
            Inbox.transport == TRANSPORT, Inbox.status == mail_models.NEEDS_ATTENTION))
        if not count:
            return []
        text = f"{count} inbox needs attention." if count == 1 else f"{count} inboxes need attention."
        return [PageNotice(text, url_for("imap_inbox.inbox_list"), "Connected inboxes", level="warning")]
    rows = db.session.execute(db.select(Inbox.email, Inbox.username, Inbox.error).where(
        Inbox.owner_id == agent.id, Inbox.transport == TRANSPORT, Inbox.status == mail_models.NEEDS_ATTENTION,
    ).order_by(Inbox.email, Inbox.id)).all()
    return [PageNotice(owner_notice(email or username, error), url_for("imap_inbox_owner.my_inboxes"),
                       "Your inboxes", level="warning") for email, username, error in rows]


def owner_notice(address: str, error: str | None) -> str:
    problem = _shorten(error) if error else "it stopped syncing."
    return f"Your inbox {address} needs attention: {problem} {OWNER_ADVICE[mail_models.NEEDS_ATTENTION]}"


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_SHOWN_CHARS else text[:_ERROR_SHOWN_CHARS - 1].rstrip() + "…"
