"""A mail account on the test Dovecot, as the ``mailbox`` fixture hands it to a test."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Mailbox:
    """A fresh mail account on the session's Dovecot, for one test."""

    server: object
    username: str
    password: str
    # The token response of the owner's sign-in, for an account on the OAuth 2.0 Dovecot.
    tokens: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.imaps_port

    @property
    def ca_file(self) -> str:
        return self.server.ca_file

    def append(self, folder: str, raw: bytes, **kwargs):
        return self.server.append(self.username, folder, raw, **kwargs)

    def write(self, folder: str, messages: list[bytes]):
        return self.server.write_maildir(self.username, folder, messages)

    def client(self):
        return self.server.client(self.username, self.password)
