"""The e-mail search page: every contact's e-mails, or one contact's (``?contact=ID``), best matches first."""
from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required
from markupsafe import Markup

from host_app.api import Contact, ContactPanel, db

from .search import MAX_WORDS, search_messages, words

bp = Blueprint("mail_search", __name__, url_prefix="/mail", template_folder="templates")


@bp.route("/search")
@login_required
def search_page():
    query = request.args.get("q", "").strip()
    contact = None
    contact_arg = request.args.get("contact", "")
    if contact_arg:
        contact = db.session.get(Contact, int(contact_arg)) if contact_arg.isdigit() else None
        if contact is None:
            return render_template("mail/search.html", q=query, contact=None, hits=[], searched=False,
                                   problem="There is no such contact; search all e-mails instead."), 404
    hits = search_messages(query, contact=contact) if query else []
    return render_template("mail/search.html", q=query, contact=contact, hits=hits, searched=bool(words(query)),
                           problem=None, max_words=MAX_WORDS)


def contact_search_panel(contact: Contact) -> ContactPanel:
    """The search box on a contact's page, for that contact's e-mails."""
    html = render_template("mail/_contact_search.html", contact=contact)
    return ContactPanel(title="Search e-mails", html=Markup(html))
