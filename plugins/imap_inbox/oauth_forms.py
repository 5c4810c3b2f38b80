"""Forms of "Sign in with Google / Microsoft / another OAuth 2.0 server": what the CRM needs before the
sign-in (name, owner, and for another server its IMAP host), and the confirmation after it."""
from __future__ import annotations

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from .ca_certificates import CaCertificateRefused, checked_ca_file, configured_ca_dir
from .forms import SECURITY_CHOICES, WithMailboxSettings, _optional_int, _strip, host_problem


class OAuthConnectForm(WithMailboxSettings, FlaskForm):
    """Before signing in. The user name is not asked: it is the account that signs in.

    Settings other plugins keep per mailbox join through ``with_settings``, as on the password form.
    """

    name = StringField("Name", description="For admins only; agents never see it.", filters=[_strip],
                       validators=[DataRequired("Give the inbox a name, e.g. Support or Sales."), Length(max=200)])
    owner_id = SelectField("Owner", coerce=_optional_int, description="The agent responsible for this inbox.",
                           validators=[DataRequired("Choose the agent who owns this inbox.")],
                           invalid_choice_message="Choose an active agent as owner.")
    # Only for "Other OAuth 2.0 / OpenID Connect server": Google's and Microsoft's IMAP servers are known.
    host = StringField("IMAP host name", description="The IMAP server, e.g. imap.example.com.", filters=[_strip],
                       render_kw={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"})
    port = IntegerField("Port", validators=[Optional(), NumberRange(1, 65535, "The port is between 1 and 65535.")],
                        description="Usually 993 (SSL/TLS) or 143 (STARTTLS).")
    security = SelectField("Security", choices=SECURITY_CHOICES, default="ssl")
    ca_file = StringField("CA file", filters=[_strip], validators=[Length(max=1000)],
                          description="Optional: the full path of the PEM certificate of a private CA that "
                                      "signed the mail server's certificate, in the CA directory "
                                      "(CRM_IMAP_CA_DIR).")

    def __init__(self, *args, needs_server: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.needs_server = needs_server

    def validate_host(self, field) -> None:
        if self.needs_server:
            problem = host_problem(field.data or "")
            if problem:
                raise ValidationError(problem)

    def validate_ca_file(self, field) -> None:
        if self.needs_server and field.data:
            try:
                checked_ca_file(field.data, configured_ca_dir(current_app.config))
            except CaCertificateRefused as exc:
                raise ValidationError(str(exc)) from None

    def pending(self) -> dict:
        """What is kept in the session while the admin signs in (no secrets)."""
        values = {"name": self.name.data, "owner_id": self.owner_id.data, "settings": self.setting_values()}
        if self.needs_server:
            values.update(host=self.host.data, port=self.port.data, security=self.security.data,
                          ca_file=self.ca_file.data or None)
        return values
