"""Benchmark harness for the IMAP inbox sync and what builds on it (``make bench``, ``python -m bench``).

One run builds a Dovecot mailbox of N messages, measures the wire limit, an
imap-tools peer, our initial and incremental syncs into SQLite and PostgreSQL,
the contacts import, the timeline page and the ``imap_email`` condition, and
writes JSON and Markdown results under ``bench/results/``. See bench/README.md.
"""
