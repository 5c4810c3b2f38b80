"""Calls of the mail core's own hooks (hookspecs.py), for transports to make once their work is committed."""
from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import current_app

from host_app.api import db

log = logging.getLogger(__name__)


def mailbox_synced(*, inbox_id: int, run_id: int, status: str, new_messages: int, removed_messages: int) -> None:
    _call("mailbox_synced", inbox_id=inbox_id, run_id=run_id, status=status, new_messages=new_messages,
          removed_messages=removed_messages)


def mailbox_settings_changed(*, inbox_id: int, changed: Iterable[str]) -> None:
    _call("mailbox_settings_changed", inbox_id=inbox_id, changed=sorted(changed))


def _call(hook_name: str, **kwargs) -> None:
    # The readers belong to other plugins: one that fails must neither fail the sync nor silence the others.
    app = current_app._get_current_object()
    for plugin, _result, error in app.extensions["plugins"].call_each(hook_name, app=app, **kwargs):
        if error is not None:
            db.session.rollback()
            log.error("%s of %s failed for inbox %s", hook_name, plugin, kwargs["inbox_id"], exc_info=error)
