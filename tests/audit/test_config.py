"""AUDIT_HMAC_KEY: required outside sandbox mode, never echoed; sandbox mode says it uses a public key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.cli.main import main
from bot.config.settings import load_settings
from bot.domain.audit import SANDBOX_AUDIT_KEY, AuditKey
from bot.errors import ConfigError

KEY_SECRET = "a random audit key from Key Vault - 32+ characters"
TENANT: dict[str, Any] = {
    "microsoft_app_id": "00000000-0000-4000-8000-0000000000b0",
    "microsoft_app_password": "bot-password",
    "microsoft_app_type": "MultiTenant",
    "graph_tenant_id": "tenant",
    "graph_client_id": "client",
    "graph_client_secret": "secret",
    "teams_channel_id": "19:incidents@thread.tacv2",
}
ENVIRONMENT = {
    "MicrosoftAppId": "00000000-0000-4000-8000-0000000000b0",
    "MicrosoftAppPassword": "bot-password",
    "MicrosoftAppType": "MultiTenant",
    "GRAPH_TENANT_ID": "tenant",
    "GRAPH_CLIENT_ID": "client",
    "GRAPH_CLIENT_SECRET": "secret",
    "TEAMS_CHANNEL_ID": "19:incidents@thread.tacv2",
}


def test_serve_outside_sandbox_mode_without_the_key_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for variable, value in ENVIRONMENT.items():
        monkeypatch.setenv(variable, value)
    for variable in ("AUDIT_HMAC_KEY", "SANDBOX_MODE", "STORE_URL"):
        monkeypatch.delenv(variable, raising=False)

    code = main(["serve"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("remediation-bot: configuration error: AUDIT_HMAC_KEY: is required: ")
    assert "SANDBOX_MODE=true" in err
    assert list(tmp_path.iterdir()) == [], "nothing was started or written"


def test_a_short_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**TENANT, audit_hmac_key="too-short-a-secret")

    assert caught.value.variable == "AUDIT_HMAC_KEY"
    assert "at least 32 characters" in caught.value.message
    assert "too-short-a-secret" not in caught.value.message


def test_the_configured_key_is_used_and_never_shown() -> None:
    settings = load_settings(**TENANT, audit_hmac_key=KEY_SECRET)

    assert settings.audit_key == AuditKey.from_secret(KEY_SECRET)
    assert KEY_SECRET not in repr(settings) and KEY_SECRET not in str(settings)
    assert KEY_SECRET not in repr(settings.audit_key)


def test_sandbox_mode_without_a_key_uses_the_public_sandbox_key_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load_settings(**{**TENANT, "microsoft_app_id": "", "sandbox_mode": True})

    assert settings.audit_key == SANDBOX_AUDIT_KEY
    assert f"public sandbox key {SANDBOX_AUDIT_KEY.key_id}" in caplog.text
    assert "not tamper-evident" in caplog.text
