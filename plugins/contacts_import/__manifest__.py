MANIFEST = {
    "name": "contacts_import",
    "version": "0.1.0",
    "description": "Create users: contacts from the people in connected mailboxes, without junk.",
    "depends": ["mail"],
    "hooks": "plugin",
    "migrations": "migrations",
}
