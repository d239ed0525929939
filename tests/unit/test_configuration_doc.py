"""docs/configuration.md is generated from Settings: it fails here when it is out of date, when a
setting has no group or no description, or when faas reads an OTEL_* variable it does not list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from faas import settings_doc
from faas.integrations import otel
from faas.services import REGISTRY
from faas.shared.config import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_page_is_the_generated_one() -> None:
    assert PAGE.read_text() == settings_doc.render(), (
        f"docs/configuration.md is out of date: run `.venv/bin/{settings_doc.REGENERATE}`"
    )


def test_every_setting_and_service_url_is_listed() -> None:
    page = settings_doc.render()
    for name in Settings.model_fields.keys() - set(settings_doc.SECTIONS):
        assert f"| `FAAS_{name.upper()}` |" in page
    for name in REGISTRY.names:
        assert f"`FAAS_{name.upper()}_URL`" in page


def test_every_otel_variable_faas_reads_is_listed() -> None:
    read = set(re.findall(r'"(OTEL_[A-Z_]+)"', Path(otel.__file__).read_text()))
    listed = {variable for variable, _, _ in settings_doc.OTEL_VARIABLES}
    assert read and read == listed


def test_a_setting_without_a_group_stops_the_generator() -> None:
    class Extended(Settings):
        new_knob: int = 1

    with pytest.raises(ValueError, match=r"without a group \['new_knob'\]"):
        settings_doc.render(Extended)


def test_a_setting_without_a_description_stops_the_generator() -> None:
    class Undescribed(Settings):
        port: int = 8000

    with pytest.raises(ValueError, match=r"Settings\.port has no description"):
        settings_doc.render(Undescribed)


def test_a_secret_default_is_masked() -> None:
    class WithSecret(Settings):
        jwt_secret: SecretStr | None = Field(SecretStr("never-print-this"), description="key")

    page = settings_doc.render(WithSecret)
    assert "never-print-this" not in page
    assert "| `FAAS_JWT_SECRET` | secret | `********` |" in page
