"""Who never becomes a contact: the team, machines and blocked addresses.

Everything here works on normalized (lower-case) addresses and is pure
Python over sets, so an import checks 20,000 people in milliseconds.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from host_app.api import normalize_email
from plugins.mail.automated import is_machine_address

from .models import KIND_ADDRESS, KIND_DOMAIN
from .public_domains import PUBLIC_MAIL_DOMAINS

# One "@", a local part without spaces or address punctuation, a dotted domain (IDN labels allowed).
_ADDRESS = re.compile(r"^[^@\s\"<>()\[\],;:]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+$")

# Exclusion reasons (also shown in dry runs and logs).
TEAM = "team address"
TEAM_DOMAIN = "team domain"
MACHINE = "machine address"
BLOCKED = "blocked"
INVALID = "not a valid address"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2]


def is_valid_address(address: str) -> bool:
    """A plain internet address (``local@domain.tld``); local names like ``root@localhost`` are not."""
    return len(address) <= 320 and bool(_ADDRESS.match(address))


def is_public_domain(domain: str, extra: Iterable[str] = ()) -> bool:
    return domain in PUBLIC_MAIL_DOMAINS or domain in set(extra)


def parse_block_entry(text: str) -> tuple[str, str]:
    """Return ``(kind, value)`` for an admin's block-list input: an address or a domain (``@`` optional).

    Raises ValueError with a plain-words message when it is neither.
    """
    value = normalize_email(text)
    if not value:
        raise ValueError("Enter an e-mail address or a domain.")
    if value.startswith("@"):
        value = value[1:]
    if "@" in value:
        if not is_valid_address(value):
            raise ValueError(f"“{text.strip()}” is not a valid e-mail address.")
        return KIND_ADDRESS, value
    value = value.strip(".")
    if not is_valid_address(f"x@{value}"):
        raise ValueError(f"“{text.strip()}” is neither an e-mail address nor a domain like example.com.")
    return KIND_DOMAIN, value


@dataclasses.dataclass
class Exclusions:
    """The addresses and domains an import must skip, and why."""

    team_addresses: set[str] = dataclasses.field(default_factory=set)
    team_domains: set[str] = dataclasses.field(default_factory=set)
    blocked_addresses: set[str] = dataclasses.field(default_factory=set)
    blocked_domains: set[str] = dataclasses.field(default_factory=set)

    @classmethod
    def build(
        cls,
        team_addresses: Iterable[str],
        blocked: Iterable[tuple[str, str]] = (),
        public_domains: Iterable[str] = (),
    ) -> Exclusions:
        """Team domains are the domains of team addresses, except public mail providers."""
        team = {normalize_email(a) for a in team_addresses if a and "@" in a}
        extra_public = set(public_domains)
        domains = {domain_of(a) for a in team}
        domains = {d for d in domains if d and not is_public_domain(d, extra_public)}
        blocked = list(blocked)
        return cls(
            team_addresses=team,
            team_domains=domains,
            blocked_addresses={v for k, v in blocked if k != KIND_DOMAIN},
            blocked_domains={v for k, v in blocked if k == KIND_DOMAIN},
        )

    def reason(self, address: str) -> str | None:
        """Why ``address`` (normalized) must not become a contact, or None when it may."""
        if not is_valid_address(address):
            return INVALID
        if address in self.team_addresses:
            return TEAM
        domain = domain_of(address)
        if domain in self.team_domains:
            return TEAM_DOMAIN
        if is_machine_address(address):
            return MACHINE
        if address in self.blocked_addresses or self._domain_blocked(domain):
            return BLOCKED
        return None

    def _domain_blocked(self, domain: str) -> bool:
        if not self.blocked_domains:
            return False
        parts = domain.split(".")
        # The domain itself and every parent: blocking example.com also blocks mail.example.com.
        return any(".".join(parts[i:]) in self.blocked_domains for i in range(len(parts) - 1))
