"""``manage.py contacts import``: preview or run the import of one inbox."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from host_app.api import db, echo_json
from plugins.mail.models import Inbox

from . import importer


@click.command("import")
@click.option("--inbox", "inbox_id", type=int, required=True, help="Id of the connected inbox.")
@click.option("--dry-run", is_flag=True, help="Only count and show who would be created.")
@click.option("--sample", "sample_size", default=importer.SAMPLE_SIZE, show_default=True,
              help="How many people a dry run shows.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def import_command(inbox_id: int, dry_run: bool, sample_size: int, as_json: bool):
    """Create contacts from the people in a connected inbox (the whole mailbox; existing contacts stay)."""
    # The host's `contacts` group outlives one app; refuse when this app runs without the plugin.
    if not current_app.extensions["plugins"].is_loaded("contacts_import"):
        raise click.ClickException("the contacts_import plugin is disabled")
    inbox = db.session.get(Inbox, inbox_id)
    if inbox is None:
        raise click.ClickException(f"there is no connected inbox with id {inbox_id}")
    if dry_run:
        result = importer.dry_run(inbox, sample_size=sample_size)
        if as_json:
            echo_json(result)
            return
        click.echo(f"This will create {result['would_create']:,} contacts from inbox {inbox_id}.")
        for person in result["sample"]:
            click.echo(f"  {person['email']}\t{person['name']}")
        return
    result = importer.import_inbox(inbox_id, full=True)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"Created {result['created']:,} contacts from inbox {inbox_id}.")
