"""contacts_import: on message rows written directly, and end to end on a real Dovecot."""
