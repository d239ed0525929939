"""The bundled price catalogue: public list prices per 1,000 tokens by model name, used for a
deployment whose routing entry sets no `price` (an explicit `price` always wins).

The table is a versioned data file shipped in the package (`prices/catalogue-<version>.json`);
a new version is a new file and a new `CATALOGUE_FILE`, so a bill can name the prices it used."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from pydantic import BaseModel, Field

from faas.services.gateway_service.routing_table import Price

CATALOGUE_FILE = "catalogue-2026-12.json"
# Suffixes a provider appends to a model family: dated snapshots (`gpt-4o-2024-08-06`,
# `claude-3-5-haiku-20241022`), `-latest`, Vertex's `@date`.
_SUFFIX_STARTS = ("-", "@")


class PriceCatalogue(BaseModel):
    version: str
    currency: str = "USD"
    unit: str = "per 1,000 tokens"
    notes: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    models: dict[str, Price]

    def price_for(self, model: str) -> Price | None:
        """The price of `model`: its exact entry, else the longest entry it extends with a
        dated or tagged suffix; a provider prefix (`openai/`, `anthropic.`) is ignored."""
        name = model.strip().lower()
        for candidate in _names(name):
            found = self.models.get(candidate)
            if found is not None:
                return found
            best = ""
            for entry in self.models:
                if (
                    len(entry) > len(best)
                    and candidate.startswith(entry)
                    and candidate[len(entry)].startswith(_SUFFIX_STARTS)
                ):
                    best = entry
            if best:
                return self.models[best]
        return None


def _names(name: str) -> list[str]:
    names = [name]
    for separator in ("/", "."):
        head, _, tail = name.partition(separator)
        if tail and head.isalpha():
            names.append(tail)
    return names


@functools.cache
def catalogue() -> PriceCatalogue:
    """The bundled catalogue, read once per process."""
    raw: Any = json.loads(
        (files("faas.services.gateway_service") / "prices" / CATALOGUE_FILE).read_text()
    )
    return PriceCatalogue.model_validate(raw)


def catalogue_price(model: str) -> Price | None:
    """The catalogue's price for `model`, or None when the catalogue does not list it."""
    return catalogue().price_for(model) if model else None
