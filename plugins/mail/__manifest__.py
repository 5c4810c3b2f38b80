MANIFEST = {
    "name": "mail",
    "version": "0.1.0",
    "description": "Stored mail: connected inboxes, their folders, messages and addresses, whatever transport "
                   "feeds them.",
    "depends": [],
    "hooks": "plugin",
    "migrations": "migrations",
}
