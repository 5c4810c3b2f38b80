MANIFEST = {
    "name": "email_domain",  # must equal the entry-point name
    "version": "1.0.0",
    "description": "Automation condition 'E-mail domain': the contact's address is (not) at one of some domains.",
    "depends": [],  # plugins this one needs, e.g. ["mail"]
    "hooks": "plugin",  # the module holding the @hookimpl functions
    "migrations": "migrations",  # no such folder here: this plugin has no tables
}
