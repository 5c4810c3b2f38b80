"""How an inbox gets new mail, in the inbox list's words: "Live", "Polling" or "Checked every hour", and why."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from plugins.mail import models as mail_models

from ..schedule import sync_interval
from . import watch_status

_REASONS = {
    "no_idle": "the server does not support IDLE (push)",
    "server_cap": "the watcher holds the most connections to this server it may open{cap} "
                  "(IMAP_WATCH_MAX_PER_SERVER); it goes live when one frees up",
}


def _every(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return "every hour" if hours == 1 else f"every {hours} hours"
    minutes = max(1, round(seconds / 60))
    return "every minute" if minutes == 1 else f"every {minutes} minutes"


def describe(inboxes: list[Any]) -> dict[int, dict[str, Any]]:
    """{inbox id: {"mode", "label", "detail", "last_event"}} for inboxes that sync; JSON-able."""
    watching = [i for i in inboxes if i.enabled and i.status not in (mail_models.NEEDS_ATTENTION,
                                                                        mail_models.DISABLED)]
    statuses, watcher_running = watch_status.read([i.id for i in watching])
    hourly = f"Checked {_every(sync_interval())}"
    words = {}
    for inbox in watching:
        status = statuses.get(inbox.id)
        last_event = status.get("last_event") if status else None
        last = datetime.fromtimestamp(last_event, UTC).isoformat() if last_event else None
        if status is None:
            mode, label = ("starting", "Connecting") if watcher_running else ("scheduled", hourly)
            detail = ("a watcher is opening the connection" if watcher_running
                      else "no watcher is running (manage.py watch), so new mail waits for the scheduled sync")
        elif status["mode"] == "live":
            mode, label, detail = "live", "Live", "new mail arrives within seconds"
            sent_seconds = status.get("sent_seconds")
            if sent_seconds == 0:
                detail += ", and mail sent from other programs too"
            elif sent_seconds:
                detail += f"; mail sent from other programs is looked for {_every(sent_seconds)}"
        elif status["mode"] == "polling":
            mode, label = "polling", f"Polling {_every(status.get('poll_seconds') or 300)}"
            cap = f" ({status['cap']:,})" if status.get("cap") else ""
            detail = _REASONS.get(status.get("reason"), "the server cannot push new mail").format(cap=cap)
        else:  # connecting, retrying, failed: the scheduled sync still runs meanwhile
            mode, label = "reconnecting", hourly
            detail = "the watcher is reconnecting" + (f": {status['reason']}" if status.get("reason") else "")
        words[inbox.id] = {"mode": mode, "label": label, "detail": detail, "last_event": last}
    return words
