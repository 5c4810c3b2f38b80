"""reply_condition: the "IMAP email" automation condition — did the contact respond to our e-mail."""
