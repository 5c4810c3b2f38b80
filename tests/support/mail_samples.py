"""Real MIME messages for the tests that open e-mails: hostile HTML with remote and cid: images and an
attachment whose name carries folders and RFC 2231 encoding, plain text with a link, a broken charset in
unclosed MIME."""
from __future__ import annotations

import datetime as dt
from email.message import EmailMessage

CARLA = "carla@customer.example"
PIXEL_GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
             b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
HOSTILE_HTML = """<html><head><script>window.parent.pwned = 1</script>
<style>body { background: url(https://tracker.example/bg.png) }</style></head>
<body><p onclick="steal()">Dear team, the <b>invoice 4711</b> is attached.</p>
<img src="{tracker}/open.gif?u=1" onerror="alert(1)" alt="pixel">
<img src="cid:logo@customer.example" alt="logo">
<a href="javascript:alert(1)">click</a> <a href="https://customer.example/orders/4711">order</a>
<iframe src="https://evil.example/"></iframe><form action="https://evil.example/"><input name="x"></form>
</body></html>"""


def base_message(subject: str, message_id: str, day: int, sender=f"Carla Customer <{CARLA}>") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "Team <team@team.example>"
    msg["Cc"] = "Dan Partner <dan@partner.example>"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    msg["Date"] = dt.datetime(2024, 5, day, 14, 30, tzinfo=dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return msg


def html_message(tracker: str = "https://tracker.example") -> bytes:
    msg = base_message("Invoice 4711", "html1@customer.example", 1)
    msg.set_content("Dear team, the invoice 4711 is attached.")
    msg.add_alternative(HOSTILE_HTML.replace("{tracker}", tracker), subtype="html")
    msg.get_payload()[1].add_related(PIXEL_GIF, "image", "gif", cid="<logo@customer.example>")
    msg.add_attachment(b"%PDF-1.4\n" + b"x" * 3000, maintype="application", subtype="pdf",
                       filename="../../etc/Rechnung für März.pdf")
    return msg.as_bytes()


def text_message() -> bytes:
    msg = base_message("Plain order", "text1@customer.example", 2)
    msg.set_content("Hello,\n\nsee https://customer.example/track?id=9 for the parcel.\n\n-- \nCarla\n")
    return msg.as_bytes()


def broken_charset_message() -> bytes:
    return (f"From: {CARLA}\r\nTo: team@team.example\r\nSubject: Broken\r\nMessage-ID: <broken1@customer.example>\r\n"
            "Date: Fri, 03 May 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"never-closed\"\r\n\r\n"
            "--never-closed\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            "Gr=FC=DFe aus M=FCnchen, Bestellung 99=\r\n").encode("ascii")


def big_attachment_message(payload: bytes) -> bytes:
    """A short note with a large binary attachment whose RFC 2231 name carries folders and non-ASCII letters."""
    msg = base_message("Scans", "scans1@customer.example", 5)
    msg.set_content("The scans are attached.")
    msg.add_attachment(payload, maintype="application", subtype="octet-stream",
                       filename=("utf-8", "", "..\\..\\Scan/Übersicht 2024.bin"))
    msg.add_attachment("<script>alert(1)</script>", subtype="html", filename="invoice.html")
    return msg.as_bytes()
