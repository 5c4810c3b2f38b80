"""Importable job functions for worker tests (RQ imports jobs by name)."""
from host_app.extensions import db
from host_app.jobs import app_job
from host_app.models import Contact


@app_job
def count_contacts() -> int:
    """Count contacts, inside whatever app context the worker provides."""
    return db.session.scalar(db.select(db.func.count(Contact.id)))
