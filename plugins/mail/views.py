"""Reading one e-mail: its page (headers, text, attachments) and its HTML in a sandboxed frame.

The HTML is sanitized (rendering.py) and, besides, served only on its own URL
with a Content-Security-Policy that forbids scripts, plugins, forms and every
network request except images the reader asked for, inside an iframe
sandboxed without scripts or same-origin rights: a sanitizer slip can still
neither run code nor reach the CRM's pages.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, make_response, render_template, request, stream_with_context
from flask_login import current_user, login_required
from markupsafe import Markup

from host_app.api import db

from . import attachments, rendering
from .access import readable_message
from .models import RECIPIENT_ROLES, Inbox, MessageAddress
from .source import MessageGone, SourceUnavailable, message_source

bp = Blueprint("mail", __name__, url_prefix="/mail", template_folder="templates", static_folder="static")

FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; font-src data:; img-src data:{remote}; "
             "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
             "sandbox allow-popups allow-popups-to-escape-sandbox")
FRAME_STYLE = ("body{margin:0;padding:8px;font:15px/1.45 system-ui,sans-serif;color:#1f2328;overflow-wrap:anywhere}"
               "img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}")


def _readable_or_404(message_id: int):
    message = readable_message(message_id)
    if message is None:
        abort(404)
    return message


def _read(message) -> tuple[bytes | None, str]:
    """The source, or None and why in plain words."""
    try:
        return message_source(message), ""
    except MessageGone:
        return None, ("This e-mail is no longer in the mailbox on the server (deleted or moved after it was "
                      "synced), so only what was stored here is shown.")
    except SourceUnavailable as exc:
        return None, str(exc)


def _show_images() -> bool:
    return request.args.get("images") == "1"


@bp.route("/messages/<int:message_id>")
@login_required
def message_view(message_id: int):
    message = _readable_or_404(message_id)
    inbox = db.session.get(Inbox, message.inbox_id)
    recipients: dict[str, list[MessageAddress]] = {role: [] for role in RECIPIENT_ROLES}
    for address in db.session.scalars(
        db.select(MessageAddress).where(MessageAddress.message_pk == message.id,
                                        MessageAddress.role.in_(RECIPIENT_ROLES))
        .order_by(MessageAddress.email)
    ):
        recipients[address.role].append(address)
    raw, problem = _read(message)
    rendered = rendering.render(raw, show_images=_show_images()) if raw is not None else None
    text = Markup(rendering.linkify(rendered.text)) if rendered is not None and rendered.text else None
    # The list the transport made without downloading (attachments.py) shows even when the server cannot
    # give the message now; a message not listed yet shows what its source says.
    listed = attachments.listed_for([message.id]).get(message.id)
    if listed is None:
        listed = rendered.attachments if rendered is not None else []
    return render_template(
        "mail/message.html", message=message, inbox=inbox, recipients=recipients, rendered=rendered,
        text=text, problem=problem, show_images=_show_images(), is_admin=current_user.is_admin,
        attachments=listed,
    )


@bp.route("/messages/<int:message_id>/body")
@login_required
def message_body(message_id: int):
    message = _readable_or_404(message_id)
    raw, _problem = _read(message)  # the page around the frame says what went wrong
    show_images = _show_images()
    content = ""
    if raw is not None:
        rendered = rendering.render(raw, show_images=show_images)
        content = rendered.html or ""
    page = (f'<!doctype html><html><head><meta charset="utf-8"><base target="_blank">'
            f"<style>{FRAME_STYLE}</style></head><body>{content}</body></html>")
    response = make_response(page)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = FRAME_CSP.format(remote=" https: http:" if show_images else "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/messages/<int:message_id>/attachments/<section>")
@login_required
def attachment_download(message_id: int, section: str):
    message = _readable_or_404(message_id)
    # Listed at sync time: the part is streamed without reading the whole message first.
    listed = {a.section: a for a in attachments.listed_for([message.id]).get(message.id, [])}
    if not listed:
        raw, problem = _read(message)
        if raw is None:
            return render_template("mail/unavailable.html", message=message, problem=problem), 404
        listed = {a.section: a for a in rendering.render(raw).attachments}
    attachment = listed.get(section)
    if attachment is None:
        abort(404)
    if attachment.size > attachments.max_bytes():
        problem = (f"{attachment.filename} is larger ({attachment.size:,} bytes) than the "
                   f"{attachments.max_bytes():,} bytes an administrator allows to download here; "
                   "open it in the mailbox itself.")
        return render_template("mail/unavailable.html", message=message, problem=problem), 413
    try:
        chunks = attachments.part_chunks(message, section)
        first = next(chunks, b"")  # the server's refusal shows as a page, not as a broken download
    except SourceUnavailable as exc:
        return render_template("mail/unavailable.html", message=message, problem=str(exc)), 503
    except MessageGone:
        problem = "This e-mail is no longer in the mailbox on the server, so its attachment cannot be downloaded."
        return render_template("mail/unavailable.html", message=message, problem=problem), 404

    def body():
        yield from attachments.decoded(_prepend(first, chunks), attachment.encoding)

    response = Response(stream_with_context(body()), mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = attachments.content_disposition(attachment.filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _prepend(first: bytes, rest):
    yield first
    yield from rest
