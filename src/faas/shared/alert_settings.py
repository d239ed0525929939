"""The alert settings (`FAAS_ALERT_*`), a part of `Settings` kept in a class of its own so the
one flat settings class stays readable."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FAAS_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    alert_interval_s: float = Field(5.0, ge=0, le=3600)
    """How often the gateway checks budget thresholds and spend anomalies; 0 turns alerts off"""
    alert_anomaly_window_min: int = Field(5, ge=1, le=60)
    """Minutes of recent spend compared with the trailing hour's rate"""
    alert_anomaly_factor: float = Field(3.0, gt=1, le=1000)
    """Recent spend rate over the trailing hour's rate that is an anomaly"""
    alert_anomaly_floor_usd: float = Field(1.0, ge=0)
    """Least USD spent in the recent window before it can be an anomaly"""
    alert_webhook_secret: SecretStr | None = None
    """HMAC-SHA256 key of the alert webhook's signature; required with FAAS_ALERT_WEBHOOK_URL"""
    alert_webhook_url: str | None = None
    """Where every alert is POSTed, signed (`X-Faas-Signature`); unset: events only"""
    alert_webhook_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Hosts/CIDRs the alert webhook may reach although private"""
    alert_webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    """Timeout of one webhook delivery attempt"""
    alert_webhook_attempts: int = Field(5, ge=1, le=20)
    """Delivery attempts per alert (exponential backoff between them)"""

    @field_validator("alert_webhook_allowlist", mode="before")
    @classmethod
    def _split_allowlist(cls, value: object) -> object:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_signed(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The secret is declared first, so it is validated (and in `info.data`) by now.
        if value and info.data.get("alert_webhook_secret") is None:
            raise ValueError("set FAAS_ALERT_WEBHOOK_SECRET too, to sign the alerts")
        return value
