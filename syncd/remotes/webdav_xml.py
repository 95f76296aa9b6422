"""WebDAV's XML: the PROPFIND request body, and the ``<D:response>`` elements of a 207
multistatus answer read as they arrive (``responses``)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

log = logging.getLogger("syncd.remotes.webdav")

DAV = "{DAV:}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/>"
    b"</D:prop></D:propfind>"
)


def responses(parser: ET.XMLPullParser[ET.Element]) -> list[tuple[str, bool, int]]:
    """The ``<D:response>`` elements completed so far, as (href path, collection, size)."""
    out: list[tuple[str, bool, int]] = []
    for event in parser.read_events():
        elem: object = event[-1]
        if not isinstance(elem, ET.Element) or elem.tag != DAV + "response":
            continue
        href = elem.findtext(DAV + "href")
        if href is None:
            continue
        is_coll = False
        size = -1
        for propstat in elem.iter(DAV + "propstat"):
            status = propstat.findtext(DAV + "status") or ""
            if " 200 " not in status + " ":
                continue
            prop = propstat.find(DAV + "prop")
            if prop is None:
                continue
            rtype = prop.find(DAV + "resourcetype")
            if rtype is not None and rtype.find(DAV + "collection") is not None:
                is_coll = True
            length = prop.findtext(DAV + "getcontentlength")
            if length and length.strip().isdigit():
                size = int(length.strip())
        elem.clear()
        try:
            decoded = unquote(urlsplit(href.strip()).path, errors="strict")
        except UnicodeDecodeError:
            log.warning("skipped a listed name that is not UTF-8: %r", href)
            continue
        out.append((decoded, is_coll, size))
    return out
