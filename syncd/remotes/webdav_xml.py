"""WebDAV's XML: the PROPFIND request body, and the ``<D:response>`` elements of a 207
multistatus answer read as they arrive (``responses``)."""

from __future__ import annotations

import email.utils
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

log = logging.getLogger("syncd.remotes.webdav")

DAV = "{DAV:}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/>"
    b"</D:prop></D:propfind>"
)
"""What a listing asks for: enough to mirror (a no-op pass of 10,000 files on nginx was 20 %
slower asking getlastmodified too, which is the upload's time there, not the file's)."""
PROPFIND_TIMES_BODY = PROPFIND_BODY.replace(
    b"<D:getcontentlength/>", b"<D:getcontentlength/><D:getlastmodified/>"
)
"""...and with the mtime, for a server that keeps the one it is sent (``X-OC-Mtime``)."""


class Listed(NamedTuple):
    """One ``<D:response>``: its href's path (decoded), whether it is a collection, its size
    (-1 if not given) and its getlastmodified (Unix seconds; None if not given)."""

    href: str
    is_coll: bool
    size: int
    mtime: int | None = None


def http_date(text: str | None) -> int | None:
    """Unix seconds of an HTTP date (RFC 1123, as getlastmodified gives it); None if none."""
    if not text:
        return None
    parsed = email.utils.parsedate_tz(text.strip())  # (a third of parsedate_to_datetime's time)
    if parsed is None:
        return None
    try:
        return int(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError):
        return None


def responses(parser: ET.XMLPullParser[ET.Element]) -> list[Listed]:
    """The ``<D:response>`` elements completed so far."""
    out: list[Listed] = []
    for event in parser.read_events():
        elem: object = event[-1]
        if not isinstance(elem, ET.Element) or elem.tag != DAV + "response":
            continue
        href = elem.findtext(DAV + "href")
        if href is None:
            continue
        is_coll = False
        size = -1
        mtime: int | None = None
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
            mtime = http_date(prop.findtext(DAV + "getlastmodified")) or mtime
        elem.clear()
        try:
            decoded = unquote(urlsplit(href.strip()).path, errors="strict")
        except UnicodeDecodeError:
            log.warning("skipped a listed name that is not UTF-8: %r", href)
            continue
        out.append(Listed(decoded, is_coll, size, mtime))
    return out


async def read_multistatus(chunks: AsyncIterable[bytes]) -> list[Listed]:
    """Every ``<D:response>`` of a 207 body, parsed while its chunks arrive (an answer's
    ``content.iter_chunked``); raises ``ET.ParseError`` on a body that is not XML."""
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
    items: list[Listed] = []
    async for chunk in chunks:
        parser.feed(chunk)
        items += responses(parser)
    parser.close()
    items += responses(parser)
    return items
