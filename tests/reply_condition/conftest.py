"""reply_condition: on rows inserted directly, and end to end on a real Dovecot with the real sync."""
