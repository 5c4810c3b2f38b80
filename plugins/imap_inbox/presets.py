"""IMAP settings of well-known mail providers, as data for the "Connect via IMAP" form.

The form's provider drop-down fills Host, Port and Security from these (in the
browser with JS, and on the server when the host was left empty) and shows the
provider's hint: what to switch on and which password to use.
"""
from __future__ import annotations

import dataclasses

OTHER = "other"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One provider's IMAP server and what its users must do before connecting."""

    key: str
    label: str
    host: str
    port: int = 993
    security: str = "ssl"  # "ssl" (implicit TLS) or "starttls"
    hint: str = ""
    help_url: str = ""
    help_text: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: tuple[Preset, ...] = (
    Preset(
        key="gmail",
        label="Gmail",
        host="imap.gmail.com",
        hint=(
            "Turn on IMAP in Gmail settings > Forwarding and POP/IMAP, and use an app password "
            "(requires 2-Step Verification). Your normal Google password will not work."
        ),
        help_url="https://support.google.com/mail/answer/185833",
        help_text="How to create a Google app password",
    ),
    Preset(
        key="outlook",
        label="Outlook / Microsoft 365",
        host="outlook.office365.com",
        hint=(
            "Make sure IMAP is enabled in Outlook settings > Mail > Forwarding and IMAP (for Microsoft 365, "
            "your admin may have to allow IMAP). With two-step verification on, use an app password. "
            "The host is outlook.office365.com."
        ),
        help_url=(
            "https://support.microsoft.com/en-us/office/"
            "pop-imap-and-smtp-settings-for-outlook-com-d088b986-291d-42b8-9564-9c414e2aa040"
        ),
        help_text="Outlook.com IMAP settings",
    ),
    Preset(
        key="yahoo",
        label="Yahoo",
        host="imap.mail.yahoo.com",
        hint=(
            "Generate an app password in Yahoo Account Security and use it here; "
            "your normal Yahoo password will not work."
        ),
        help_url="https://help.yahoo.com/kb/SLN15241.html",
        help_text="How to generate a Yahoo app password",
    ),
    Preset(
        key="icloud",
        label="iCloud",
        host="imap.mail.me.com",
        hint=(
            "Use an app-specific password created at account.apple.com (requires two-factor authentication). "
            "The username is your full @icloud.com address."
        ),
        help_url="https://support.apple.com/en-us/102654",
        help_text="How to create an app-specific password",
    ),
    Preset(
        key="zoho",
        label="Zoho Mail",
        host="imap.zoho.com",
        hint=(
            "Enable IMAP access in Zoho Mail settings > Mail accounts > IMAP. The host is imap.zoho.com, "
            "or your region's server (imap.zoho.eu, imap.zoho.in, imap.zoho.com.au). "
            "With two-factor authentication on, use an app-specific password."
        ),
        help_url="https://www.zoho.com/mail/help/imap-access.html",
        help_text="Zoho Mail IMAP access",
    ),
    Preset(
        key="fastmail",
        label="Fastmail",
        host="imap.fastmail.com",
        hint=(
            "Create an app password in Fastmail settings > Privacy & Security (your normal password will not "
            "work). The host is imap.fastmail.com."
        ),
        help_url="https://www.fastmail.com/help/technical/servernamesandports.html",
        help_text="Fastmail server names and ports",
    ),
    Preset(
        key="gmx",
        label="GMX",
        host="imap.gmx.net",
        hint=(
            "Enable IMAP in GMX settings > POP3 & IMAP (\"Allow access via POP3 and IMAP\"). "
            "The host is imap.gmx.net."
        ),
    ),
    Preset(
        key="aol",
        label="AOL",
        host="imap.aol.com",
        hint=(
            "Generate an app password in AOL Account Security and use it here. The host is imap.aol.com."
        ),
        help_url="https://help.aol.com/articles/Create-and-manage-app-password",
        help_text="How to create an AOL app password",
    ),
    Preset(
        key=OTHER,
        label="Other (enter the server yourself)",
        host="",
        hint=(
            "Ask your e-mail provider or IT team for the IMAP server name, port and security. "
            "Most servers use SSL/TLS on port 993."
        ),
    ),
)

_BY_KEY = {preset.key: preset for preset in PRESETS}


def get_preset(key: str | None) -> Preset | None:
    """Return the preset with ``key``, or ``None`` for an unknown key."""
    return _BY_KEY.get(key or "")


def preset_for_host(host: str | None) -> Preset:
    """The preset whose server is ``host`` (to pre-select it when editing), else "Other"."""
    host = (host or "").strip().lower().rstrip(".")
    for preset in PRESETS:
        if preset.host and preset.host == host:
            return preset
    return _BY_KEY[OTHER]


def presets_data() -> list[dict]:
    """All presets as plain dicts, for the page's JSON (read by inbox_form.js)."""
    return [preset.to_dict() for preset in PRESETS]
