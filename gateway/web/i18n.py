"""The web app's words in Dutch and English, from JSON message catalogues per language
(locales/<lang>.json, and locales/<module>.<lang>.json for the page modules).

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
    """The language's messages: ``locales/<lang>.json`` and each page module's ``locales/<module>.<lang>.json``
    (a key in two files is a mistake, refused)."""
    merged: dict[str, str] = {}
    folder = resources.files("gateway.web").joinpath("locales")
    names = sorted(
        entry.name for entry in folder.iterdir() if entry.name == f"{lang}.json" or entry.name.endswith(f".{lang}.json")
    )
    for name in names:
        data: dict[str, str] = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        twice = merged.keys() & data.keys()
        if twice:
            raise ValueError(f"locales/{name}: keys already in another catalogue: {', '.join(sorted(twice))}")
        merged.update(data)
    return merged


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
