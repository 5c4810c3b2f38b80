"""``manage.py inboxes ...``: connect, sync, resync, list, rotate-key. JSON on stdout; errors on stderr with exit 1.

Other plugins' settings of a mailbox come in through the mail core: their
options on ``connect``, their keys in ``list --json``.
"""
from __future__ import annotations

import copy
import sys

import click
from flask.cli import AppGroup

from host_app.api import Agent, db, echo_json, normalize_email
from plugins.mail import mailbox_settings

from . import service
from .ca_certificates import MAX_PEM_BYTES
from .connection import ImapConnectError
from .crypto import EncryptionKeyError, rotate_keys
from .jobs import enqueue_sync, sync_inbox, sync_running
from .models import AUTH_PASSWORD, ImapInbox
from .oauth_providers import PROVIDERS, OAuthNotConfigured

inboxes_cli = AppGroup("inboxes", help="Team mailboxes connected over IMAP.")


def _fail(message: str, hint: str = "") -> click.ClickException:
    return click.ClickException(message + (f"\nHint: {hint}" if hint else ""))


@inboxes_cli.command("connect")
@click.option("--name", required=True, help="A name for admins (agents never see it).")
@click.option("--host", default=None,
              help="IMAP server, e.g. imap.gmail.com (with --provider google or microsoft: theirs by default).")
@click.option("--port", type=int, default=None, help="Default: 993 (ssl) or 143 (starttls).")
@click.option("--username", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--provider", type=click.Choice(PROVIDERS), default=None,
              help="Sign in with OAuth 2.0 at this service instead of a password (with --refresh-token-stdin).")
@click.option("--refresh-token-stdin", is_flag=True,
              help="Read the OAuth 2.0 refresh token (got from --provider for this account) from standard input.")
@click.option("--owner", "owner_email", required=True, help="E-mail of the agent who owns the inbox.")
@click.option("--security", type=click.Choice(["ssl", "starttls"]), default=None,
              help="Default: ssl (SSL/TLS).")
@click.option("--ca-file", default=None,
              help="Full path of the PEM file of a private CA that signed the server's certificate, inside "
                   "the CA directory (CRM_IMAP_CA_DIR); the web and worker processes must be able to read it.")
@click.option("--ca-pem", "ca_pem_file", type=click.File("rb"), default=None,
              help="A PEM file of that CA, from anywhere: its certificate is stored with the inbox (as an "
                   "upload on the form), so no CA directory is needed.")
@click.option("--email", default=None, help="The mailbox's own address (default: the user name).")
@click.option("--folder", "folders", multiple=True, help="An extra folder to sync (repeatable).")
@click.option("--no-check", is_flag=True, help="Save without trying the login first.")
def connect_command(name, host, port, username, password_stdin, provider, refresh_token_stdin, owner_email,
                    security, ca_file, ca_pem_file, email, folders, no_check, **settings):
    """Try the login, save the inbox and enqueue its first sync; prints {"id": ...}.

    With a password (--password-stdin), or signed in with OAuth 2.0 (--provider and --refresh-token-stdin).
    """
    if refresh_token_stdin and not provider:
        raise _fail("--refresh-token-stdin needs --provider (google, microsoft or oidc): the service that "
                    "issued the refresh token.")
    if provider and not refresh_token_stdin:
        raise _fail("--provider needs --refresh-token-stdin: the refresh token of the signed-in account.")
    if password_stdin == refresh_token_stdin:
        raise _fail("Give either --password-stdin, or --provider with --refresh-token-stdin.")
    what = "refresh token" if provider else "password"
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        variable = "$REFRESH_TOKEN" if provider else "$PASSWORD"
        raise _fail(f"No {what} on standard input.",
                    f"Pipe it in: printf '%s\\n' \"{variable}\" | manage.py inboxes connect ...")
    if not provider and not host:
        raise _fail("Missing option --host: the IMAP server, e.g. imap.example.com.")
    owner = db.session.scalar(db.select(Agent).where(Agent.email == normalize_email(owner_email)))
    if owner is None:
        raise _fail(f"No agent with e-mail {owner_email}.", "Create one with `manage.py agents create`.")
    if ca_file and ca_pem_file:
        raise _fail("Give either --ca-file or --ca-pem, not both.")
    ca_pem = ca_pem_file.read(MAX_PEM_BYTES + 1) if ca_pem_file else None
    common = dict(name=name, host=host, port=port, username=username, owner_id=owner.id, ca_file=ca_file,
                  ca_pem=ca_pem,
                  extra_folders=folders, email=email, settings=settings, check=not no_check)
    try:
        if provider:
            inbox = service.create_oauth_inbox(provider=provider, refresh_token=secret, security=security, **common)
        else:
            inbox = service.create_inbox(password=secret, security=security or "ssl", **common)
    except ImapConnectError as exc:
        raise _fail(f"Could not log in ({exc.kind}): {exc.message}", exc.hint) from None
    except (service.InvalidInboxSettings, OAuthNotConfigured) as exc:
        raise _fail(str(exc)) from None
    echo_json({"id": inbox.id, "name": inbox.name, "status": inbox.status})


def _get_inbox(inbox_id: int) -> ImapInbox:
    inbox = db.session.get(ImapInbox, inbox_id)
    if inbox is None:
        raise _fail(f"No inbox #{inbox_id}.", "See `manage.py inboxes list`.")
    return inbox


@inboxes_cli.command("sync")
@click.argument("inbox_id", type=int)
@click.option("--enqueue", is_flag=True, help="Put the sync on the RQ queue instead of running it here.")
def sync_command(inbox_id, enqueue):
    """Sync inbox ID now, in the foreground (the same job code workers run); prints a JSON summary."""
    _get_inbox(inbox_id)
    _sync_now(inbox_id, enqueue)


@inboxes_cli.command("resync")
@click.argument("inbox_id", type=int)
@click.option("--enqueue", is_flag=True, help="Put the sync on the RQ queue instead of running it here.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def resync_command(inbox_id, enqueue, yes):
    """Forget the mail stored from inbox ID and read the whole mailbox again (contacts stay).

    For mail stored by an older version that kept less of each message. The
    mailbox itself is not touched. Until the sync is done, the inbox's mail is
    missing from timelines. While a sync of the inbox runs, the next one does it.
    """
    inbox = _get_inbox(inbox_id)
    if not yes:
        click.confirm(f"Forget the {inbox.message_count or 0:,} messages stored from inbox #{inbox_id} "
                      f"({inbox.name}) and read the mailbox again?", abort=True, err=True)
    service.request_resync(inbox, enqueue=False)
    if not enqueue and sync_running(inbox_id):
        raise _fail(f"Inbox #{inbox_id} is being synced right now; its next sync reads the mailbox again.",
                    f"Run `manage.py inboxes sync {inbox_id}` once this one has finished, or let the schedule do it.")
    _sync_now(inbox_id, enqueue)


def _sync_now(inbox_id: int, enqueue: bool) -> None:
    if enqueue:
        job_id = enqueue_sync(inbox_id)
        echo_json({"inbox_id": inbox_id, "job_id": job_id, "enqueued": job_id is not None})
        return

    def progress(done: int, total: int) -> None:
        click.echo(f"inbox {inbox_id}: {done}/{total} messages", err=True)

    try:
        summary = sync_inbox(inbox_id, on_progress=progress)
    except Exception as exc:  # noqa: BLE001 - already logged by the sync; say it plainly here
        raise _fail(f"The sync failed unexpectedly ({type(exc).__name__}); see the log.") from None
    echo_json(summary)
    if summary["status"] not in ("ok", "already_running"):
        click.echo(f"Error: {summary.get('error') or summary['status']}", err=True)
        if summary.get("hint"):
            click.echo(f"Hint: {summary['hint']}", err=True)
        sys.exit(1)


@inboxes_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_command(as_json):
    """Every connected inbox with how it logs in and its sync health (never a password or token)."""
    inboxes = db.session.scalars(db.select(ImapInbox).order_by(ImapInbox.id)).all()
    details = mailbox_settings.details(inbox.id for inbox in inboxes)
    rows = []
    for inbox in inboxes:
        row = {
            "id": inbox.id,
            "name": inbox.name,
            "host": inbox.host,
            "port": inbox.port,
            "username": inbox.username,
            "owner": inbox.owner.email if inbox.owner else None,
            "auth": inbox.auth or AUTH_PASSWORD,
            "provider": inbox.oauth_provider,
            "status": inbox.status,
            "enabled": inbox.enabled,
            "error": inbox.error,
            "last_synced_at": inbox.last_synced_at.isoformat() if inbox.last_synced_at else None,
            "messages": inbox.message_count or 0,
        }
        rows.append(row | {key: value for key, value in details[inbox.id].items() if key not in row})
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}\t{row['name']}\t{row['username']}@{row['host']}:{row['port']}\t"
                   f"{row['status']}\t{row['messages']} messages" + (f"\t{row['error']}" if row["error"] else ""))


@inboxes_cli.command("rotate-key")
def rotate_key_command():
    """Re-encrypt every stored password and OAuth 2.0 refresh token with the current key.

    Put the new key first in IMAP_ENCRYPTION_KEYS and keep the old one after
    it, run this, then drop the old key.
    """
    try:
        count = rotate_keys()
    except EncryptionKeyError as exc:
        raise _fail(str(exc)) from None
    echo_json({"reencrypted": count})


def inboxes_group(app) -> AppGroup:
    """``inboxes`` for one app: ``connect`` with the options of that app's plugins (mailbox_cli_options)."""
    group = AppGroup(inboxes_cli.name, help=inboxes_cli.help)
    for command in inboxes_cli.commands.values():
        group.add_command(command)
    connect = copy.copy(connect_command)
    taken = {param.name for param in connect_command.params}
    connect.params = connect_command.params + [
        option for option in mailbox_settings.cli_options(app) if option.name not in taken]
    group.add_command(connect)
    return group
