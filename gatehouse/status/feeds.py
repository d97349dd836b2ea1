"""The incident history as feeds, as Statuspage publishes them: ``/status/history.atom`` (Atom
1.0) and ``/status/history.rss`` (RSS 2.0) — one entry per incident and maintenance (the latest
50 of each), its updates as the content, newest first. Built from the same documents as the
JSON, so the three never disagree."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime
from html import escape  # quotes too (attributes); not xml.sax, which pulls in six modules
from typing import Any

PATHS = {"/status/history.atom": "application/atom+xml; charset=utf-8",
         "/status/history.rss": "application/rss+xml; charset=utf-8"}
# what XML 1.0 cannot hold even escaped — the C0 controls but tab, newline and carriage return
# (an update pasted from a terminal brings ESC), lone surrogates, U+FFFE and U+FFFF: one made
# the whole feed "not well-formed" for every reader
NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _entries(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    items = [*docs["incidents.json"]["incidents"],
             *docs["scheduled-maintenances.json"]["scheduled_maintenances"]]
    return sorted(items, key=lambda i: i["updated_at"], reverse=True)


def _content(item: dict[str, Any]) -> str:
    parts = [f"<p><small>{escape(u['created_at'])}</small><br><strong>"
             f"{escape(u['status'].replace('_', ' ').capitalize())}</strong> - "
             f"{escape(u['body'])}</p>" for u in item["incident_updates"]]
    return "".join(parts)


def atom(docs: dict[str, dict[str, Any]]) -> str:
    page = docs["summary.json"]["page"]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">',
           f"<id>tag:gatehouse,2026:{escape(page['id'])}/history</id>",
           f'<link rel="alternate" type="text/html" href="{escape(page["url"])}/status"/>',
           (f'<link rel="self" type="application/atom+xml" '
            f'href="{escape(page["url"])}/status/history.atom"/>'),
           f"<title>{escape(page['name'])} Status - Incident History</title>",
           f"<updated>{escape(page['updated_at'])}</updated>"]
    for item in _entries(docs):
        out += ["<entry>",
                f"<id>tag:gatehouse,2026:Incident/{escape(item['id'])}</id>",
                f"<published>{escape(item['created_at'])}</published>",
                f"<updated>{escape(item['updated_at'])}</updated>",
                f'<link rel="alternate" type="text/html" href="{escape(item["shortlink"])}"/>',
                f"<title>{escape(item['name'])}</title>",
                f'<content type="html">{escape(_content(item))}</content>',
                "</entry>"]
    out.append("</feed>")
    return _document(out)


def _document(lines: list[str]) -> str:
    return NOT_XML.sub("", "\n".join(lines) + "\n")


def _rfc822(iso: str) -> str:
    return format_datetime(datetime.fromisoformat(iso))


def rss(docs: dict[str, dict[str, Any]]) -> str:
    page = docs["summary.json"]["page"]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"><channel>',
           f"<title>{escape(page['name'])} Status - Incident History</title>",
           f"<link>{escape(page['url'])}/status</link>",
           (f'<atom:link href="{escape(page["url"])}/status/history.rss" rel="self" '
            'type="application/rss+xml"/>'),
           (f"<description>{escape(page['name'])} status: incidents and maintenance"
            "</description>"),
           f"<pubDate>{_rfc822(page['updated_at'])}</pubDate>"]
    for item in _entries(docs):
        out += ["<item>", f"<title>{escape(item['name'])}</title>",
                f"<description>{escape(_content(item))}</description>",
                f"<pubDate>{_rfc822(item['created_at'])}</pubDate>",
                f"<link>{escape(item['shortlink'])}</link>",
                (f'<guid isPermaLink="false">tag:gatehouse,2026:Incident/{escape(item["id"])}'
                 "</guid>"), "</item>"]
    out.append("</channel></rss>")
    return _document(out)
