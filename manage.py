#!/usr/bin/env python
"""The CRM's command line: ``python manage.py --help``."""
from flask.cli import FlaskGroup, routes_command, shell_command

from host_app import create_app
from host_app.runner import run_command

cli = FlaskGroup(create_app=create_app, add_default_commands=False, help=__doc__)
cli.add_command(run_command)
cli.add_command(shell_command)
cli.add_command(routes_command)

if __name__ == "__main__":
    cli()
