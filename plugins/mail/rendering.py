"""One e-mail's source made readable: its text, its HTML made safe, its inline images and attachments.

Never raises on what a sender wrote: unknown or lying charsets are guessed
(``headers.decode_bytes``), malformed MIME is read as far as Python's lenient
parser goes, and whatever could not be read is named in ``problems``.

HTML is cleaned with nh3 (Ammonia), an allow-list sanitizer: no scripts,
event handlers, forms, frames, ``<style>`` or ``<link>``; links open in a new
tab without a referrer; ``cid:`` images become ``data:`` URLs of the message's
own parts; remote images are dropped unless the reader asked for them (so a
tracking pixel does not fire on open). The result is still only ever shown in
a sandboxed frame with a strict Content-Security-Policy (views.py): the
sanitizer and the policy each stop what the other might miss.
"""
from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import html
import re
from email.message import Message as EmailMessage

import nh3

from .decoding import decode_bytes, header_text

MAX_INLINE_IMAGE_BYTES = 2 * 1024 * 1024  # per cid: image turned into a data: URL
MAX_INLINE_IMAGES_BYTES = 8 * 1024 * 1024  # all of them together
MAX_PARTS = 500  # a message with more is read no further
SAFE_IMAGE_TYPES = ("image/png", "image/gif", "image/jpeg", "image/webp", "image/bmp")

ALLOWED_TAGS = {
    "a", "abbr", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center", "cite", "code",
    "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
}
ALLOWED_ATTRIBUTES = {
    "*": {"style", "title", "dir", "lang", "align", "valign", "width", "height", "bgcolor", "color"},
    "a": {"href"},
    "img": {"src", "alt", "border"},
    "font": {"face", "size"},
    "table": {"border", "cellpadding", "cellspacing"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap"},
    "ol": {"start", "type"},
}
# Layout and colour only: nothing that loads a URL (background-image, list-style-image ...).
ALLOWED_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "text-transform", "vertical-align", "white-space",
    "letter-spacing", "word-spacing", "width", "max-width", "min-width", "height", "max-height", "min-height",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding", "padding-top",
    "padding-right", "padding-bottom", "padding-left", "border", "border-top", "border-right", "border-bottom",
    "border-left", "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "border-radius", "display", "float", "clear", "direction",
}
_URL_RE = re.compile(r"\b(?:https?://|mailto:|www\.)[^\s<>\"']+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?)]}'\""


@dataclasses.dataclass
class Attachment:
    """A part the reader may download. ``section`` is its IMAP section number ("2", "1.3"), the name every
    transport's ``open_message_part`` understands; ``encoding`` its Content-Transfer-Encoding."""

    section: str
    filename: str
    content_type: str
    size: int
    encoding: str = ""


@dataclasses.dataclass
class RenderedMessage:
    text: str | None = None  # the plain-text body
    html: str | None = None  # the HTML body, sanitized
    remote_images: bool = False  # the HTML has remote images (left out unless asked for)
    attachments: list[Attachment] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def parse(raw: bytes) -> EmailMessage:
    """The MIME tree of a message, read leniently (compat32 keeps headers as they are)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def part_text(part: EmailMessage, problems: list[str]) -> str:
    """A text part decoded from its transfer encoding and charset, guessing when either lies."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - a broken transfer encoding: the raw text is the best there is
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "replace") if isinstance(payload, str) else b""
    charset = part.get_content_charset() or part.get_param("charset") or "utf-8"
    if not isinstance(charset, str):
        charset = "utf-8"
    return decode_bytes(data, charset, problems, "body: ").replace("\x00", "").replace("\r\n", "\n")


def filename_of(part: EmailMessage) -> str:
    """A part's file name: RFC 2231 parameters and RFC 2047 words decoded; "" when it has none."""
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:  # noqa: BLE001 - a malformed parameter is a part without a name
        name = ""
    if isinstance(name, tuple):  # an RFC 2231 value compat32 could not collapse
        name = email.utils.collapse_rfc2231_value(name)
    return header_text(str(name).encode("utf-8", "surrogateescape"))


_UNSAFE_FILENAME_RE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


def safe_filename(name: str, fallback: str = "attachment") -> str:
    """A file name that names only a file: no folders ("../", "C:\\"), control or reserved characters, no
    leading dots; the sender's name otherwise kept (UTF-8)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_RE.sub("_", name).strip().lstrip(".").strip()
    if len(name) > 200:
        stem, dot, extension = name.rpartition(".")
        name = (stem[:190] + dot + extension[:9]) if dot and len(extension) < 10 else name[:200]
    return name or fallback


def is_attachment(part: EmailMessage) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    if disposition == "attachment":
        return True
    maintype = part.get_content_maintype()
    if maintype in ("text", "multipart"):
        named_inline = disposition == "inline" and filename_of(part)
        return bool(named_inline and part.get_content_subtype() not in ("plain", "html"))
    # Images with a Content-ID and no name are the HTML's inline images, not files.
    return not (maintype == "image" and part.get("Content-ID") and not filename_of(part))


def leaf_parts(message: EmailMessage):
    """(IMAP section number, part) of every part that is not a multipart, in order (RFC 3501 6.4.5): the
    parts of a multipart are 1, 2 ...; of a nested one 2.1, 2.2 ...; a message without parts is "1". A
    forwarded e-mail (message/rfc822) is one part, downloaded whole."""
    if not message.is_multipart() or message.get_content_type() == "message/rfc822":
        yield "1", message
        return
    stack = [(str(i), child) for i, child in reversed(list(enumerate(message.get_payload(), start=1)))]
    while stack:
        section, part = stack.pop()
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            children = part.get_payload()
            stack.extend((f"{section}.{i}", child) for i, child in reversed(list(enumerate(children, start=1))))
        else:
            yield section, part


def decoded_size(part: EmailMessage) -> int:
    if part.get_content_type() == "message/rfc822":
        try:
            return len(part.get_payload(0).as_bytes()) if part.is_multipart() else len(str(part.get_payload()))
        except Exception:  # noqa: BLE001
            return 0
    try:
        return len(part.get_payload(decode=True) or b"")
    except Exception:  # noqa: BLE001
        return 0


def render(raw: bytes, *, show_images: bool = False) -> RenderedMessage:
    """What a reader sees of a message's source."""
    result = RenderedMessage()
    try:
        message = parse(raw)
        text_part = html_part = None
        inline_images: dict[str, EmailMessage] = {}
        for index, (section, part) in enumerate(leaf_parts(message)):
            if index >= MAX_PARTS:
                result.problems.append(f"only the first {MAX_PARTS} parts were read")
                break
            content_type = part.get_content_type()
            content_id = (part.get("Content-ID") or "").strip().strip("<>")
            if content_id and content_type.startswith("image/"):
                inline_images.setdefault(content_id, part)
            if content_type == "message/rfc822" or is_attachment(part):
                fallback = f"part-{section}" + (".eml" if content_type == "message/rfc822" else "")
                encoding = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
                result.attachments.append(Attachment(section, safe_filename(filename_of(part), fallback),
                                                     content_type, decoded_size(part), encoding))
            elif content_type == "text/plain" and text_part is None:
                text_part = part
            elif content_type == "text/html" and html_part is None:
                html_part = part
        if message.defects:
            result.problems.append("the message's MIME structure is malformed; what could be read is shown")
        if text_part is not None:
            result.text = part_text(text_part, result.problems)
        if html_part is not None:
            result.html, result.remote_images = sanitize_html(
                part_text(html_part, result.problems), inline_images, show_images)
        if result.text is None and result.html is None and not message.is_multipart():
            # No text part at all (a bare body without a Content-Type it understood): its text anyway.
            result.text = part_text(message, result.problems)
    except Exception as exc:  # noqa: BLE001 - a sender's message must never break the page
        result.problems.append(f"the message could not be read completely ({type(exc).__name__})")
        if result.text is None and result.html is None:
            result.text = decode_bytes(raw, "utf-8")
    return result


def _data_url(part: EmailMessage, budget: list[int]) -> str | None:
    content_type = part.get_content_type()
    if content_type not in SAFE_IMAGE_TYPES:
        return None  # SVG carries scripts; anything else is not an image a browser shows
    try:
        data = part.get_payload(decode=True) or b""
    except Exception:  # noqa: BLE001
        return None
    if len(data) > MAX_INLINE_IMAGE_BYTES or len(data) > budget[0]:
        return None
    budget[0] -= len(data)
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def sanitize_html(source: str, inline_images: dict[str, EmailMessage], show_images: bool) -> tuple[str, bool]:
    """Clean HTML with nh3; returns it and whether it had remote images (dropped unless ``show_images``)."""
    remote = False
    budget = [MAX_INLINE_IMAGES_BYTES]
    data_urls: dict[str, str | None] = {}

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        nonlocal remote
        lowered = value.strip().lower()
        if tag == "img" and attribute == "src":
            if lowered.startswith("cid:"):
                content_id = value.strip()[4:].strip("<>")
                if content_id not in data_urls:
                    part = inline_images.get(content_id)
                    data_urls[content_id] = _data_url(part, budget) if part is not None else None
                return data_urls[content_id]
            if lowered.startswith(("http:", "https:", "//")):
                remote = True
                return value if show_images and not lowered.startswith("//") else None
            return None  # data: from the sender, file:, relative ...: nothing we vouch for
        if attribute == "href":
            return value if lowered.startswith(("http:", "https:", "mailto:")) else None
        return value

    cleaned = nh3.clean(
        source,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template", "iframe", "object"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties=ALLOWED_STYLE_PROPERTIES,
    )
    return cleaned, remote


def linkify(text: str) -> str:
    """Plain text as escaped HTML whose web and mail addresses are links (line breaks are kept by CSS)."""
    out, pos = [], 0
    for match in _URL_RE.finditer(text):
        url = match.group(0).rstrip(_TRAILING_PUNCTUATION)
        out.append(html.escape(text[pos:match.start()]))
        href = url if not url.lower().startswith("www.") else "https://" + url
        out.append(f'<a href="{html.escape(href)}" target="_blank" rel="noopener noreferrer">{html.escape(url)}</a>')
        pos = match.start() + len(url)
    out.append(html.escape(text[pos:]))
    return "".join(out)
