"""Settings > Connected inboxes (placeholder blueprint; the pages are being written)."""
from flask import Blueprint

bp = Blueprint("imap_inbox", __name__, url_prefix="/settings/inboxes", template_folder="templates",
               static_folder="static", static_url_path="/static/imap_inbox")
