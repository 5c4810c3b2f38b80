"""Test helpers for the imap_inbox plugin: a real Dovecot server and a mail generator.

``DovecotServer`` runs a throwaway Dovecot instance on loopback (see ``dovecot.py``);
``mailgen`` builds realistic and deliberately broken RFC 5322 messages.
"""

from .dovecot import DovecotServer

__all__ = ["DovecotServer"]
