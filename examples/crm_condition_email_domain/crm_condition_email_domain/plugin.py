"""Hook implementations: the host calls these (see host_app/hookspecs.py)."""
from host_app import hookimpl

from .condition import EmailDomainCondition


@hookimpl
def automation_conditions(app):
    return [EmailDomainCondition()]
