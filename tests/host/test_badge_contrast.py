"""Status badges, pills and tags are readable: text on background at least 4.5:1 (WCAG 2.x, AA for normal text).

The shipped stylesheets are read as a browser would for one badge element: every rule whose last compound
selector names only classes the badge has, by specificity then order, for ``color`` and the background. A
page loads crm.css and at most one plugin stylesheet, so each badge is checked with crm.css alone and with
crm.css plus each plugin's. A badge without a background of its own is checked on the card and the page
background, the two surfaces badges sit on.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_SHEET = ROOT / "host_app" / "static" / "crm.css"
PLUGIN_SHEETS = sorted(ROOT.glob("plugins/*/static/*.css"))
# The classes that make an element a badge; a compound selector naming one of them declares a badge.
BADGE_CLASS = re.compile(r"^(status|status-[\w-]+|badge|pill|tag)$")
MIN_RATIO = 4.5
NAMED = {"white": "#ffffff", "black": "#000000"}


def rules(css: str) -> list[tuple[str, str]]:
    """(selector list, declarations) of every style rule, those inside @media blocks included."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    found, depth, start, prelude = [], 0, 0, []
    for i, ch in enumerate(css):
        if ch == "{":
            prelude.append(css[start:i].strip())
            depth += 1
            start = i + 1
        elif ch == "}":
            depth -= 1
            head = prelude.pop()
            if not head.startswith("@"):
                found.append((head, css[start:i]))
            start = i + 1
    assert depth == 0, "unbalanced braces"
    return found


def declarations(block: str) -> dict[str, tuple[str, bool]]:
    out = {}
    for part in block.split(";"):
        if ":" in part:
            name, value = part.split(":", 1)
            value = value.strip()
            important = value.endswith("!important")
            out[name.strip().lower()] = (value.removesuffix("!important").strip(), important)
    return out


def last_compound(selector: str) -> str:
    return re.split(r"[\s>+~]+", selector.strip())[-1]


def classes(compound: str) -> set[str]:
    return set(re.findall(r"\.([\w-]+)", compound))


def specificity(selector: str) -> tuple[int, int, int]:
    ids = len(re.findall(r"#[\w-]+", selector))
    cls = len(re.findall(r"\.[\w-]+|\[[^\]]*\]|:(?!:)[\w-]+", selector))
    types = len(re.findall(r"(?:^|[\s>+~])([a-zA-Z][\w-]*)", selector)) + len(re.findall(r"::[\w-]+", selector))
    return ids, cls, types


class Sheet:
    """The rules of some stylesheets in page order, with the custom properties of :root resolved."""

    def __init__(self, paths: list[Path]):
        self.names = " + ".join(p.name for p in paths)
        self.rules = []  # (selector, declarations), in order
        self.variables = {}
        for path in paths:
            for head, block in rules(path.read_text()):
                decls = declarations(block)
                for selector in head.split(","):
                    selector = selector.strip()
                    if selector == ":root":
                        self.variables.update({k: v for k, (v, _) in decls.items() if k.startswith("--")})
                    self.rules.append((selector, decls))

    def color(self, value: str) -> str | None:
        """A hex colour for ``value``; None for no colour (transparent); fails on what it cannot judge."""
        value = value.strip().lower()
        while (m := re.fullmatch(r"var\((--[\w-]+)\)", value)):
            value = self.variables[m.group(1)].strip().lower()
        value = NAMED.get(value, value)
        if value in ("transparent", "none"):
            return None
        m = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", value)
        assert m, f"{self.names}: cannot judge the contrast of colour {value!r}; teach this test or use hex"
        digits = m.group(1)
        return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)

    def background(self, value: str) -> str | None:
        """The colour layer of a ``background`` shorthand (images would need a person to judge)."""
        assert "url(" not in value and "gradient" not in value, f"{self.names}: a badge with an image: {value}"
        tokens = re.findall(r"var\([^)]*\)|#[0-9a-fA-F]+|[a-zA-Z]+", value)
        colours = [t for t in tokens if t.startswith(("#", "var(")) or t.lower() in (*NAMED, "transparent", "none")]
        return self.color(colours[-1]) if colours else None

    def badges(self) -> set[frozenset[str]]:
        """The class sets of the badges these sheets declare: ``.status-ok`` is ``{status, status-ok}``."""
        found = set()
        for selector, _ in self.rules:
            compound = last_compound(selector)
            names = classes(compound)
            if any(BADGE_CLASS.match(n) for n in names) and ":" not in compound:
                if any(n.startswith("status-") for n in names):
                    names.add("status")
                found.add(frozenset(names))
        return found

    def computed(self, badge: frozenset[str]) -> tuple[str, str | None]:
        """(text colour, background colour or None) of an element with the classes ``badge``.

        Rules with a pseudo-class or pseudo-element on the badge itself (:hover ...) are left out: they
        are states, not the badge as shown.
        """
        winners: dict[str, tuple] = {}
        for order, (selector, decls) in enumerate(self.rules):
            compound = last_compound(selector)
            wanted = classes(compound)
            if not wanted or not wanted <= badge or ":" in compound:
                continue
            for prop in ("color", "background", "background-color"):
                if prop in decls:
                    value, important = decls[prop]
                    key = "color" if prop == "color" else "background"
                    rank = (important, specificity(selector), order)
                    if key not in winners or rank > winners[key][0]:
                        winners[key] = (rank, prop, value)
        text = self.color(winners["color"][2]) if "color" in winners else self.color(self.variables["--text"])
        if "background" not in winners:
            return text, None
        _, prop, value = winners["background"]
        return text, self.color(value) if prop == "background-color" else self.background(value)


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


SHEETS = [[HOST_SHEET]] + [[HOST_SHEET, p] for p in PLUGIN_SHEETS]


def test_the_contrast_formula_matches_wcag():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic just-failing grey
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)


def test_the_reader_finds_every_kind_of_badge():
    # Guards the test itself: a parser that found nothing would pass everything.
    host = Sheet([HOST_SHEET]).badges()
    assert len(host) >= 15
    assert {frozenset({"status", "status-ok"}), frozenset({"badge", "in"}), frozenset({"tag"})} <= host
    inboxes = Sheet([HOST_SHEET, ROOT / "plugins" / "imap_inbox" / "static" / "inboxes.css"])
    assert inboxes.computed(frozenset({"status", "status-ok"}))[1] == "#e3f4ea"
    assert Sheet([HOST_SHEET]).computed(frozenset({"status", "status-ok"}))[1] is None


@pytest.mark.parametrize("paths", SHEETS, ids=lambda paths: "+".join(p.name for p in paths))
def test_every_badge_is_readable(paths):
    sheet = Sheet(paths)
    surfaces = [sheet.color(sheet.variables["--card"]), sheet.color(sheet.variables["--bg"])]
    failing = []
    for badge in sorted(sheet.badges(), key=sorted):
        text, background = sheet.computed(badge)
        for behind in [background] if background else surfaces:
            ratio = contrast(text, behind)
            if ratio < MIN_RATIO:
                failing.append(f".{'.'.join(sorted(badge))}: {text} on {behind} is {ratio:.2f}:1")
    assert not failing, f"{sheet.names}: badges below {MIN_RATIO}:1\n" + "\n".join(failing)
