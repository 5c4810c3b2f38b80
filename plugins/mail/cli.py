"""``manage.py messages``: ``show ID``, one stored e-mail in full (headers, text, attachments) read from its mailbox;
``search WORDS``, the stored e-mails containing them."""
from __future__ import annotations

import html

import click
import nh3
from flask.cli import AppGroup

from host_app.api import Contact, db, echo_json, normalize_email

from . import rendering, search
from .attachments import listed_for
from .conversations import thread_ids
from .models import Inbox, Message, MessageAddress
from .source import MessageGone, SourceUnavailable, message_source

messages_cli = AppGroup("messages", help="Stored e-mails, read in full from their mailboxes.")


def message_details(message: Message) -> dict:
    """What ``messages show`` prints: the stored headers, then the text and attachments read from the mailbox."""
    inbox = db.session.get(Inbox, message.inbox_id)
    addresses: dict[str, list[dict]] = {"to": [], "cc": [], "bcc": []}
    for address in db.session.scalars(
        db.select(MessageAddress).where(MessageAddress.message_pk == message.id,
                                        MessageAddress.role.in_(tuple(addresses)))
        .order_by(MessageAddress.email)
    ):
        addresses[address.role].append({"email": address.email, "name": address.name})
    details = {
        "id": message.id, "message_id": message.message_id, "subject": message.subject,
        "from": {"email": message.from_email, "name": message.from_name}, **addresses,
        "date": message.date.isoformat(), "direction": message.direction,
        "inbox": {"id": inbox.id, "email": inbox.email, "name": inbox.name} if inbox else None,
        "thread_id": thread_ids([message])[message.id], "preview": message.preview,
        "text": None, "attachments": [], "problem": None,
    }
    # Listed without a download (attachments.py): shown even when the mailbox cannot give the message now.
    details["attachments"] = [{"name": a.filename, "type": a.content_type, "size": a.size, "section": a.section}
                              for a in listed_for([message.id]).get(message.id, [])]
    try:
        rendered = rendering.render(message_source(message))
    except MessageGone:
        details["problem"] = ("The e-mail is no longer in the mailbox on the server (deleted there after it was "
                              "synced); only what was stored here remains.")
        return details
    except SourceUnavailable as exc:
        details["problem"] = str(exc)
        return details
    text = rendered.text
    if text is None and rendered.html:
        text = html.unescape(nh3.clean(rendered.html, tags=set())).strip()
    details["text"] = text
    details["attachments"] = [{"name": a.filename, "type": a.content_type, "size": a.size, "section": a.section}
                              for a in rendered.attachments]
    return details


@messages_cli.command("show")
@click.argument("message_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_command(message_id, as_json):
    """One e-mail's headers, text and attachment list (its text is read from the mailbox, BODY.PEEK)."""
    message = db.session.get(Message, message_id)
    if message is None:
        raise click.ClickException(f"no stored e-mail with id {message_id}")
    details = message_details(message)
    if as_json:
        echo_json(details)
        return
    click.echo(f"Subject: {details['subject']}")
    sender = details["from"]
    click.echo(f"From: {sender['name']} <{sender['email']}>" if sender["name"] else f"From: {sender['email']}")
    for role in ("to", "cc", "bcc"):
        if details[role]:
            click.echo(f"{role.title()}: " + ", ".join(a["email"] for a in details[role]))
    click.echo(f"Date: {details['date']}")
    click.echo("")
    click.echo(details["problem"] or details["text"] or "(no text)")
    for attachment in details["attachments"]:
        click.echo(f"Attachment: {attachment['name']} ({attachment['type']}, {attachment['size']} bytes)")


@messages_cli.command("search")
@click.argument("words", nargs=-1, required=True)
@click.option("--contact", "contact_email", default="", help="Only this contact's e-mails (their address).")
@click.option("--limit", default=search.DEFAULT_LIMIT, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def search_command(words, contact_email, limit, as_json):
    """E-mails on contacts' timelines containing every word (stemmed: "invoices" finds "invoice"), best first."""
    query = " ".join(words)
    if not search.words(query):
        raise click.ClickException("give at least one word to search for (letters or digits)")
    contact = None
    if contact_email:
        contact = db.session.scalar(db.select(Contact).where(Contact.email == normalize_email(contact_email)))
        if contact is None:
            raise click.ClickException(f"no contact with the e-mail address {contact_email}")
    hits = search.search_messages(query, contact=contact, limit=limit)
    if as_json:
        echo_json([hit.as_json() for hit in hits])
        return
    if not hits:
        click.echo("No e-mail contains all of these words.", err=True)
    for hit in hits:
        direction = "received" if hit.direction == "in" else "sent"
        click.echo(f"{hit.message_id}\t{hit.date:%Y-%m-%d %H:%M}\t{direction}\t{search.plain(hit.subject)}")
