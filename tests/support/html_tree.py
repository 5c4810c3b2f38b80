"""A page as a tree of elements, and what a screen reader gets from it: ids, descriptions, accessible names.

Test-client pages are parsed with the standard library's HTMLParser; enough of the accessible-name rules
(aria-labelledby, aria-label, content, title) for our buttons and links, without a browser.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Element | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element | str] = []

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)

    @property
    def classes(self) -> set[str]:
        return set((self.get("class") or "").split())

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(self, match: Callable[[Element], bool]) -> list[Element]:
        return [e for e in self.iter() if match(e)]

    def text(self) -> str:
        """The text content, whitespace collapsed (what the page says, hidden parts included)."""
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


class Page:
    def __init__(self, html: str):
        builder = _Builder()
        builder.feed(html)
        builder.close()
        self.root = builder.root
        self.ids: dict[str, Element] = {}
        for element in self.root.iter():
            if element.get("id"):
                assert element.get("id") not in self.ids, f"duplicate id {element.get('id')!r}"
                self.ids[element.get("id")] = element

    def find_all(self, match: Callable[[Element], bool]) -> list[Element]:
        return self.root.find_all(match)

    def by_id(self, id_: str) -> Element:
        assert id_ in self.ids, f"no element with id {id_!r}"
        return self.ids[id_]

    def described_by(self, element: Element) -> list[Element]:
        """The elements ``aria-describedby`` names; each must exist."""
        return [self.by_id(i) for i in (element.get("aria-describedby") or "").split()]

    def accessible_name(self, element: Element) -> str:
        if element.get("aria-labelledby"):
            return " ".join(self.by_id(i).text() for i in element.get("aria-labelledby").split())
        if element.get("aria-label"):
            return " ".join(element.get("aria-label").split())
        if element.tag == "input":
            return element.get("value") or ""
        return element.text() or " ".join((element.get("title") or "").split())


def field_notes(page: Page) -> tuple[int, list[str]]:
    """(notes checked, problems) for the hints and errors of every ``div.field`` of the form macro.

    Each note (``.hint``, ``.error``) needs an id that every control of its field names in aria-describedby.
    """
    checked, problems = 0, []
    for box in page.find_all(lambda e: e.tag == "div" and "field" in e.classes):
        controls = box.find_all(lambda e: e.tag in ("input", "select", "textarea") and e.get("type") != "hidden")
        assert controls, f"a field without a control: {box!r}"
        for note in box.find_all(lambda e: bool(e.classes & {"hint", "error"})):
            checked += 1
            for control in controls:
                if note.get("id") is None or note not in page.described_by(control):
                    problems.append(f"{control.get('name')}: not described by {note.text()!r}")
    return checked, problems


def first_cell_name(row: Element) -> str:
    """A row's name as people see it: the first cell's bold text or link, else the whole first cell."""
    cell = next(e for e in row.iter() if e.tag == "td")
    named = cell.find_all(lambda e: e.tag in ("strong", "a"))
    return (named[0] if named else cell).text()


def row_controls_not_naming_their_row(page: Page, table: Element, row_name=first_cell_name,
                                      skip=lambda control: False) -> tuple[int, list[str]]:
    """(controls checked, problems): every link and button of a body row must say which row it acts on."""
    checked, problems = 0, []
    for row in table.find_all(lambda e: e.tag == "tr" and any(c.tag == "td" for c in e.iter())):
        name = row_name(row)
        for control in row.find_all(lambda e: e.tag == "button" or (e.tag == "a" and e.get("href"))):
            if skip(control):
                continue
            checked += 1
            label = page.accessible_name(control)
            visible = control.text().strip("…— ")  # what voice control users say must be in the name too
            if name not in label or visible not in label:
                problems.append(f"{control.text()!r} in the row of {name!r} is named {label!r}")
    return checked, problems
