MANIFEST = {
    "name": "imap_inbox",
    "version": "0.1.0",
    "description": "Settings > Connected inboxes: sync team mailboxes over IMAP (read-only) onto contact timelines.",
    "depends": ["mail"],
    "hooks": "plugin",
    "migrations": "migrations",
}
