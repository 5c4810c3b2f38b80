"""imap_inbox: connect team mailboxes over IMAP and sync them, read-only, onto contact timelines."""
