"""A stored message's full source, from whichever transport holds it (the ``fetch_message_source`` hook).

Only metadata is stored at sync time (models.py); the body is read from the
mailbox when someone opens the message, and kept in Redis for a few minutes
so that the page, its HTML frame and its attachments read the server once.
docs/plugins.md says why (fetch on open, not text at sync).
"""
from __future__ import annotations

import logging

from flask import current_app
from redis.exceptions import RedisError

from host_app.api import redis_connection

from .models import Message

log = logging.getLogger(__name__)

CACHE_SECONDS = 600
DEFAULT_CACHE_MAX_BYTES = 10 * 1024 * 1024  # larger sources are read again each time rather than kept


class MessageGone(Exception):
    """The mailbox no longer has the message (deleted or moved on the server since the last sync)."""


class SourceUnavailable(Exception):
    """The message could not be read now (server down, login refused, no transport loaded): plain words."""


def _cache_key(message: Message) -> str:
    return f"mail:source:{message.id}:{message.folder_id}:{message.uid}"


def message_source(message: Message) -> bytes:
    """The RFC 5322 source of ``message``; raises MessageGone or SourceUnavailable."""
    key = _cache_key(message)
    redis = redis_connection()
    try:
        cached = redis.get(key)
    except RedisError:
        cached = None
    if cached is not None:
        return cached
    app = current_app._get_current_object()
    raw = app.extensions["plugins"].hook.fetch_message_source(app=app, message=message)
    if raw is None:
        raise SourceUnavailable("The plugin that reads this inbox is not running, so the full e-mail cannot be "
                                "opened; its summary is shown.")
    if len(raw) <= int(app.config.get("MAIL_SOURCE_CACHE_MAX_BYTES", DEFAULT_CACHE_MAX_BYTES)):
        try:
            redis.set(key, raw, ex=CACHE_SECONDS)
        except RedisError as exc:
            log.warning("could not keep message %s in the cache: %s", message.id, exc)
    return raw
