"""Reading pages as people read them."""

import html
import re


def text_of(page_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_html)).split())


def dd(page_html: str, element_id: str) -> str:
    found = re.search(rf'<dd id="{element_id}"[^>]*>(.*?)</dd>', page_html, re.S)
    return text_of(found.group(1)) if found else None
