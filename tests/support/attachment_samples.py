"""Messages whose attachments are listed from the server's BODYSTRUCTURE: nested multiparts, RFC 2231 names
split in pieces, RFC 2047 names, names with folders, a forwarded e-mail."""
from __future__ import annotations

from email.message import EmailMessage

from tests.support.mail_samples import PIXEL_GIF, base_message

LONG_NAME = "Angebot für die Großkunden – Übersicht aller Positionen im Jahr 2024 (Entwurf).xlsx"


def nested_message() -> bytes:
    """multipart/mixed [alternative [text, related [html, cid: image]], spreadsheet, note, forwarded e-mail]."""
    msg = base_message("Quarterly figures", "nested1@customer.example", 6)
    msg.set_content("The figures are attached.")
    msg.add_alternative('<p>The figures are attached. <img src="cid:chart@customer.example"></p>', subtype="html")
    msg.get_payload()[1].add_related(PIXEL_GIF, "image", "gif", cid="<chart@customer.example>")
    # A long non-ASCII name: Python writes it as RFC 2231 pieces (filename*0*=, filename*1*= ...).
    msg.add_attachment(b"PK\x03\x04" + bytes(range(256)) * 40, maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                       filename=("utf-8", "", "C:\\Users\\carla\\" + LONG_NAME))
    note = EmailMessage()
    note["Content-Type"] = "text/plain; charset=utf-8"
    note["Content-Disposition"] = 'attachment; filename="=?utf-8?q?Notiz_=C3=BCber_/etc/passwd.txt?="'
    note.set_payload("eine Notiz\n")
    msg.attach(note)
    forwarded = base_message("Original offer", "forwarded1@supplier.example", 2, sender="Sam <sam@supplier.example>")
    forwarded.set_content("the original")
    msg.add_attachment(forwarded)
    return msg.as_bytes()


NESTED_ATTACHMENTS = [
    ("2", LONG_NAME, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("3", "passwd.txt", "text/plain"),  # "Notiz über /etc/passwd.txt": only the file's own name is kept
    ("4", "part-4.eml", "message/rfc822"),
]
