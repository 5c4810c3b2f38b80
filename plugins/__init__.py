"""The plugins shipped with the CRM; each subpackage is one plugin (see its __manifest__.py)."""
