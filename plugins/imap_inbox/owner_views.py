"""Your inboxes: the signed-in agent's own inboxes, read-only (address, status, last sync, what to do).

Admins change inboxes on Settings > Connected inboxes; this page is for their owners, who may see how their
mailbox syncs but not its settings: never its name (for admins only), server, login or hints meant for the
admin, only the address and the sync's plain-words error.
"""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from host_app.api import db

from .models import ImapInbox
from .notices import OWNER_ADVICE
from .views import STATUS_LABELS, absolute_time, relative_time

bp = Blueprint("imap_inbox_owner", __name__, url_prefix="/inboxes", template_folder="templates")


@bp.route("/")
@login_required
def my_inboxes():
    inboxes = db.session.scalars(db.select(ImapInbox).where(ImapInbox.owner_id == current_user.id)
                                 .order_by(ImapInbox.email, ImapInbox.id)).all()
    return render_template("imap_inbox/owner_list.html", inboxes=inboxes, status_labels=STATUS_LABELS,
                           advice=OWNER_ADVICE, relative_time=relative_time, absolute_time=absolute_time)
