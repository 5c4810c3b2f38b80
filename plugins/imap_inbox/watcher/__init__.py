"""Live inboxes: the watcher process that keeps an IMAP IDLE connection per inbox and starts syncs at once.

``supervisor`` runs it, ``inbox_watch`` watches one inbox over ``idle_client``,
``opening`` paces new connections, ``sync_trigger`` turns changes into the
usual sync jobs, ``leases`` shares inboxes among watchers, ``watch_status``
tells the inbox list, ``memory`` keeps malloc from holding on to memory.
"""
