"""The web app's words in Dutch and English, from one JSON message catalogue per language (locales/*.json).

The language is the ``lang`` cookie (the switch on every page), else the browser's Accept-Language, else Dutch.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGUAGES = ("nl", "en")
DEFAULT = "nl"


@cache
def catalogue(lang: str) -> dict[str, str]:
    text = resources.files("gateway.web").joinpath("locales", f"{lang}.json").read_text(encoding="utf-8")
    data: dict[str, str] = json.loads(text)
    return data


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower().split("-")[0]))
    for _, _, lang in sorted(ranked):
        if lang in LANGUAGES:
            return lang
    return DEFAULT


class Translator:
    """``t("key")`` in templates; a key missing from the catalogue shows as itself (and a test catches it)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.messages = catalogue(lang)

    def __call__(self, key: str, **values: object) -> str:
        text = self.messages.get(key, key)
        return text.format(**values) if values else text
