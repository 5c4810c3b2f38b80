"""What counts as automated mail: the one rule every plugin that reads mail goes by.

Two levels, the second containing the first:

* **sent by a machine**: an auto-reply (Auto-Submitted other than "no",
  X-Autoreply/X-Autorespond, Precedence auto_reply), a bulk send (Precedence
  bulk or junk), a delivery report (multipart/report), or a sender address
  only machines use (noreply@, mailer-daemon@, bounces+…@ ...). Never a
  person's answer: reply_condition does not count it as a response.
* **automated**: sent by a machine, or sent to a list (List-Id,
  List-Unsubscribe, Precedence list). What the stored ``Message.automated``
  says; contacts_import does not make contacts of people who only ever sent
  such mail. A reply through a mailing list is still a person's answer,
  which is why lists are on this level only.

Works on the header values as the mail core stores them (``headers.py``
reads and normalizes them), so it can run at parse time and on stored rows.
"""
from __future__ import annotations

import re

# Precedence values of mail nobody typed for this recipient. "list" is a person writing to a list.
MACHINE_PRECEDENCE = frozenset(("auto_reply", "bulk", "junk"))
LIST_PRECEDENCE = frozenset(("list",))

# Local parts only machines use. Kept to unmistakable names: "info", "support" or "sales" are read by people.
_MACHINE_LOCAL_PART = re.compile(
    r"""^(?:
        no[-_.]?reply | do[-_.]?not[-_.]?reply | dont[-_.]?reply   # noreply, no-reply, donotreply, do-not-reply
        | mailer[-_.]?daemon | postmaster
        | bounces? | notifications?
    )(?:[-_.+].*)?$""",
    re.VERBOSE,
)


def is_machine_address(address: str | None) -> bool:
    """noreply@, mailer-daemon@, postmaster@, bounce(s)[+…]@, notifications@ and their spellings, in any case."""
    return bool(address) and bool(_MACHINE_LOCAL_PART.match(address.partition("@")[0].lower()))


def sent_by_machine(
    auto_submitted: str | None,
    precedence: str | None,
    x_autoreply: bool | None,
    content_type: str | None,
    from_email: str | None,
) -> bool:
    """Whether a machine sent the message (see the module's docstring): never a person's answer."""
    if auto_submitted and auto_submitted.strip().lower() not in ("", "no"):
        return True
    if x_autoreply:
        return True
    if precedence and precedence.strip().lower() in MACHINE_PRECEDENCE:
        return True
    if content_type and content_type.strip().lower().startswith("multipart/report"):
        return True
    return is_machine_address(from_email)


def is_automated(
    auto_submitted: str | None,
    precedence: str | None,
    x_autoreply: bool | None,
    content_type: str | None,
    from_email: str | None,
    list_id: str | None,
    list_unsubscribe: bool | None,
) -> bool:
    """Whether the message is automated mail: sent by a machine, or to a list."""
    if list_id or list_unsubscribe:
        return True
    if precedence and precedence.strip().lower() in LIST_PRECEDENCE:
        return True
    return sent_by_machine(auto_submitted, precedence, x_autoreply, content_type, from_email)
