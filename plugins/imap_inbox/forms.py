"""Forms of Settings > Connected inboxes: connect/edit an inbox, confirm a delete.

Every form is a FlaskForm, so every POST carries a CSRF token. The password
field never renders its value back (PasswordField), not even after a failed
POST.
"""
from __future__ import annotations

import ipaddress
import re

from flask import current_app
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, ValidationError

from plugins.mail.mailbox_settings import MailboxField

from .ca_certificates import MAX_PEM_BYTES, CaCertificateRefused, checked_ca_file, configured_ca_dir, validate_pem
from .presets import OTHER, PRESETS, get_preset

SECURITY_CHOICES = [
    SelectChoice("ssl", "SSL/TLS (usually port 993)"),
    SelectChoice("starttls", "STARTTLS (usually port 143)"),
]
DEFAULT_PORTS = {"ssl": 993, "starttls": 143}

# One DNS label: letters, digits and inner hyphens (underscores appear in some internal names).
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
# Folder names are free text on the server, but control characters are never right.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _optional_int(value) -> int | None:
    """Coerce a select's value; the empty placeholder becomes ``None``."""
    if value in (None, ""):
        return None
    return int(value)


def host_problem(host: str) -> str | None:
    """Return why ``host`` is not a server name or IP address, in plain words, or ``None``."""
    if not host:
        return "Enter the IMAP server name, e.g. imap.example.com."
    if "://" in host or host.lower().startswith(("imap:", "imaps:", "http:", "https:")):
        return "Enter only the server name, without imap:// or https://, e.g. imap.example.com."
    if any(ch.isspace() for ch in host):
        return "The server name cannot contain spaces."
    if "@" in host:
        return "This looks like an e-mail address; enter the server name, e.g. imap.example.com."
    if "/" in host:
        return "Enter only the server name, without a path, e.g. imap.example.com."
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(candidate)
        return None
    except ValueError:
        pass
    if re.fullmatch(r".+:\d+", host):
        return "Enter the port in the Port field, not after the server name."
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL_RE.match(label) for label in name.split(".")):
        return "This is not a valid server name; use letters, digits, dots and hyphens, e.g. imap.example.com."
    return None


def parse_folders(text: str | list | None) -> list[str]:
    """Split the comma-separated extra folders, dropping blanks and repeats, keeping order."""
    parts = text if isinstance(text, list | tuple) else (text or "").split(",")
    folders: list[str] = []
    for part in parts:
        name = part.strip()
        if name and name not in folders:
            folders.append(name)
    return folders


class WithMailboxSettings:
    """A form that other plugins' per-mailbox settings join (the mail core's ``mailbox_form_fields`` hook)."""

    setting_names: tuple[str, ...] = ()

    @classmethod
    def with_settings(cls, settings: list[MailboxField]) -> type:
        """This form with the fields other plugins add."""
        fields = {item.name: item.field for item in settings if not hasattr(cls, item.name)}
        return type(cls.__name__, (cls,), {**fields, "setting_names": tuple(fields)})

    def setting_fields(self) -> list:
        """The bound fields other plugins added, in their order."""
        return [self[name] for name in self.setting_names]

    def setting_values(self) -> dict:
        """What was submitted for the other plugins' settings, for the mail core's ``save_mailbox_settings``."""
        return {name: self[name].data for name in self.setting_names}


class InboxForm(WithMailboxSettings, FlaskForm):
    """Connect via IMAP (new) and edit an inbox: the fields in the words mail users know.

    Settings other plugins keep per mailbox join through ``with_settings``.
    """

    name = StringField(
        "Name",
        description="For admins only; agents never see it.",
        filters=[_strip],
        validators=[DataRequired("Give the inbox a name, e.g. Support or Sales."), Length(max=200)],
    )
    provider = SelectField(
        "Provider",
        description="Fills in the server settings for well-known providers.",
        choices=[SelectChoice(p.key, p.label) for p in PRESETS],
        default=OTHER,
        invalid_choice_message="Choose a provider from the list, or Other.",
    )
    host = StringField(
        "Host name",
        description="The IMAP server, e.g. imap.example.com.",
        filters=[_strip],
        render_kw={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"},
    )
    username = StringField(
        "Username",
        description="Usually the e-mail address.",
        filters=[_strip],
        validators=[DataRequired("Enter the username, usually the e-mail address."), Length(max=320)],
        render_kw={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"},
    )
    password = PasswordField(
        "Password or app password",
        description="Stored encrypted; never shown again.",
        render_kw={"autocomplete": "new-password"},
    )
    port = IntegerField(
        "Port",
        default=993,
        invalid_value_message="Enter the port as a number from 1 to 65535 (usually 993).",
        render_kw={"min": 1, "max": 65535},
    )
    security = SelectField(
        "Security",
        choices=SECURITY_CHOICES,
        default="ssl",
        description="The connection is always encrypted; there is no plain-text option.",
        invalid_choice_message="Choose SSL/TLS or STARTTLS.",
    )
    ca_file = StringField(
        "CA file",
        description=(
            "Optional, only for private servers whose certificate is signed by your own certificate authority: "
            "the full path of that authority's PEM file in the CA directory (CRM_IMAP_CA_DIR), or upload it "
            "below. Leave both empty for public providers."
        ),
        filters=[_strip],
        validators=[Length(max=1000)],
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    ca_upload = FileField(
        "Or upload the CA certificate",
        description=f"A PEM file of at most {MAX_PEM_BYTES // 1024} KB, kept with the inbox; it replaces the CA file.",
        render_kw={"accept": ".pem,.crt,.cer,application/x-pem-file"},
    )
    forget_ca_upload = BooleanField("Forget the uploaded CA certificate")
    owner_id = SelectField(
        "Owner",
        coerce=_optional_int,
        description="The agent responsible for this inbox.",
        validators=[DataRequired("Choose the agent who owns this inbox.")],
        invalid_choice_message="Choose an active agent as owner.",
    )
    extra_folders = StringField(
        "Extra folders",
        description=(
            "Optional. The inbox and sent mail are always synced; list more folders here, "
            "separated by commas, e.g. Archive, Support."
        ),
        filters=[_strip],
        validators=[Length(max=4000)],
    )

    def __init__(self, *args, require_password: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.require_password = require_password
        if not require_password:
            self.password.description = (
                "Leave blank to keep the stored password. Changing the host name, port, security, username or "
                "CA file needs it entered again: the stored password is only ever sent to the server it was "
                "entered for.")

    # -- server-side presets (the same thing inbox_form.js does in the browser) --

    def apply_preset(self) -> None:
        """With a provider chosen and no host typed, take the provider's host, port and security."""
        preset = get_preset(self.provider.data)
        if preset is None or preset.key == OTHER or self.host.data:
            return
        self.host.data = preset.host
        self.port.data = preset.port
        self.port.raw_data = [str(preset.port)]
        self.port.process_errors = []
        self.security.data = preset.security

    def validate(self, extra_validators=None) -> bool:
        self.apply_preset()
        return super().validate(extra_validators=extra_validators)

    # -- inline validators --

    def validate_host(self, field) -> None:
        problem = host_problem(field.data or "")
        if problem:
            raise ValidationError(problem)
        if field.data.startswith("[") and field.data.endswith("]"):
            field.data = field.data[1:-1]  # [::1] as typed in URLs; the socket wants ::1

    def validate_port(self, field) -> None:
        if field.process_errors:
            return  # "not a number" was already said
        if field.data is None or not 1 <= field.data <= 65535:
            raise ValidationError("Enter the port as a number from 1 to 65535 (usually 993).")

    def validate_password(self, field) -> None:
        if self.require_password and not field.data:
            raise ValidationError("Enter the mailbox password (or the app password your provider gave you).")
        if field.data and len(field.data) > 1000:
            raise ValidationError("This password is too long.")

    def validate_ca_file(self, field) -> None:
        # Only paths inside the CA directory are opened, and every refusal reads the same: the form must not
        # tell which files exist on the server (issue 14). The inbox's own saved path is the connection's to judge.
        path = field.data
        if not path or path == getattr(self, "stored_ca_file", None):
            return
        try:
            checked_ca_file(path, configured_ca_dir(current_app.config))
        except CaCertificateRefused as exc:
            raise ValidationError(str(exc)) from None

    def validate_ca_upload(self, field) -> None:
        self.uploaded_ca_pem = None
        if not field.data:
            return
        try:
            self.uploaded_ca_pem = validate_pem(field.data.stream.read(MAX_PEM_BYTES + 1))
        except CaCertificateRefused as exc:
            raise ValidationError(str(exc)) from None

    def validate_extra_folders(self, field) -> None:
        for name in parse_folders(field.data):
            if _CONTROL_RE.search(name):
                raise ValidationError("Folder names cannot contain control characters.")
            if len(name) > 1000:
                raise ValidationError("A folder name is too long.")

    # -- what the service needs --

    def connection_fields(self) -> dict:
        """Host, port, security, username and CA certificate as the service takes them.

        An upload replaces the CA file; a CA file typed (or the box ticked) replaces the upload; with
        neither, a stored upload stays.
        """
        fields = {
            "host": self.host.data,
            "port": self.port.data,
            "security": self.security.data,
            "username": self.username.data,
            "ca_file": self.ca_file.data or None,
        }
        uploaded = getattr(self, "uploaded_ca_pem", None)
        if uploaded:
            fields.update(ca_file=None, ca_pem=uploaded)
        elif fields["ca_file"] or self.forget_ca_upload.data:
            fields["ca_pem"] = None
        return fields

    def inbox_fields(self) -> dict:
        """Every field except the password, as keyword arguments for the service."""
        return {
            "name": self.name.data,
            **self.connection_fields(),
            "owner_id": self.owner_id.data,
            "extra_folders": parse_folders(self.extra_folders.data),
        }


class DeleteInboxForm(FlaskForm):
    """Deleting removes the inbox's stored mail, so the admin must tick a box first."""

    confirm = BooleanField(
        "Yes, delete this inbox and the e-mails the CRM stored from it.",
        validators=[DataRequired("Tick the box to confirm the delete.")],
    )


class ResyncInboxForm(FlaskForm):
    """Reading the mailbox again first forgets what was stored from it, so the admin must tick a box first."""

    confirm = BooleanField(
        "Yes, forget the e-mails stored from this inbox and read the mailbox again.",
        validators=[DataRequired("Tick the box to confirm.")],
    )
