"""The favicon: linked from every page, shipped with the package, and /favicon.ico answers too."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET


def icon_href(page: str) -> str:
    links = re.findall(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert len(links) == 1, "one icon link in the head"
    return links[0]


def test_pages_link_the_icon_and_it_is_served_as_an_svg_image(admin_client):
    hrefs = {icon_href(admin_client.get(path).get_data(as_text=True))
             for path in ("/contacts/", "/settings/", "/settings/plugins", "/automations/")}
    assert len(hrefs) == 1
    href = hrefs.pop()
    r = admin_client.get(href)
    assert r.status_code == 200
    assert r.mimetype == "image/svg+xml"
    # A drawable SVG, not an empty file: a root <svg> with a viewBox and something painted inside.
    root = ET.fromstring(r.get_data())
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")
    assert len(root) >= 1


def test_the_login_page_links_it_too(client):
    # Before signing in, the first page a newcomer sees.
    r = client.get("/login")
    assert r.status_code == 200
    assert icon_href(r.get_data(as_text=True)).endswith("/favicon.svg")


def test_favicon_ico_answers_with_the_same_icon_without_signing_in(client, admin_client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200
    assert r.mimetype.startswith("image/")
    page = admin_client.get("/contacts/").get_data(as_text=True)
    assert r.get_data() == admin_client.get(icon_href(page)).get_data()
