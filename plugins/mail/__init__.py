"""mail: the one owner of stored mail, whatever transport brought it (IMAP today).

Transports such as ``imap_inbox`` depend on this plugin: they subclass its
``Inbox`` and ``Folder`` for their own connection state and feed its
messages; ``contacts_import`` and ``reply_condition`` read the mail from here
and never from a transport.
"""
