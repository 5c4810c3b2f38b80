MANIFEST = {
    "name": "reply_condition",
    "version": "0.1.0",
    "description": "The 'IMAP email' automation condition: did the contact respond to one of our e-mails.",
    "depends": ["mail"],
    "hooks": "plugin",
    "migrations": "migrations",
}
