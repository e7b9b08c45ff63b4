"""Secrets in settings are secret values, and a new bot is single-tenant unless told otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.config.settings import load_settings
from bot.errors import ConfigError
from bot.teams.adapter import build_adapter

SECRETS = {
    "microsoft_app_password": "bot password 7f3a9c from Key Vault",
    "graph_client_secret": "graph secret 91be2d from Key Vault",
    "push_shared_secret": "push secret of at least thirty-two characters 5d1e",
    "audit_hmac_key": "audit key of at least thirty-two characters 0c4b",
    "store_url": "postgresql://remediationbot:db-password-5a9e@pg.example:5432/bot?sslmode=require",
}
REQUIRED: dict[str, Any] = {
    "microsoft_app_id": "00000000-0000-4000-8000-0000000000b0",
    "graph_tenant_id": "00000000-0000-4000-8000-00000000a11c",
    "graph_client_id": "client",
    "teams_channel_id": "19:incidents@thread.tacv2",
}


def test_no_secret_shows_in_any_rendering_of_the_settings() -> None:
    settings = load_settings(**REQUIRED, **SECRETS)

    renderings = [
        repr(settings),
        str(settings),
        json.dumps(settings.model_dump(mode="json")),
        settings.model_dump_json(),
    ]
    for secret in SECRETS.values():
        for rendering in renderings:
            assert secret not in rendering
    # The values themselves are intact for the code that needs them.
    assert settings.graph_client_secret.get_secret_value() == SECRETS["graph_client_secret"]
    assert settings.push_shared_secret.get_secret_value() == SECRETS["push_shared_secret"]


def test_a_new_bot_is_single_tenant_in_the_tenant_it_serves() -> None:
    settings = load_settings(**REQUIRED, **SECRETS)

    assert settings.microsoft_app_type == "SingleTenant"
    assert settings.tenant_id == REQUIRED["graph_tenant_id"]
    # botbuilder is handed the tenant, so outbound tokens come from it, not the multi-tenant authority.
    build_adapter(settings)


def test_single_tenant_without_any_tenant_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{**REQUIRED, "graph_tenant_id": ""}, **SECRETS)

    assert "GRAPH_TENANT_ID" in str(caught.value) or "MicrosoftAppTenantId" in str(caught.value)


def test_a_short_push_secret_is_refused_without_echoing_it() -> None:
    short = "short push secret"
    with pytest.raises(ConfigError) as caught:
        load_settings(**REQUIRED, **{**SECRETS, "push_shared_secret": short})

    assert "PUSH_SHARED_SECRET" in str(caught.value) and short not in str(caught.value)


def test_metrics_never_share_the_public_port() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**REQUIRED, **SECRETS, port=3978, metrics_port=3978)

    assert "METRICS_PORT" in str(caught.value)
    assert load_settings(**REQUIRED, **SECRETS).metrics_on_main_port is False


def test_the_teams_sdk_is_botbuilder_unless_told_and_a_bad_choice_names_the_variable() -> None:
    assert load_settings(**REQUIRED, **SECRETS).teams_sdk == "botbuilder"
    assert load_settings(**REQUIRED, **SECRETS, teams_sdk="agents").teams_sdk == "agents"
    with pytest.raises(ConfigError) as caught:
        load_settings(**REQUIRED, **SECRETS, teams_sdk="botframework")

    assert "TEAMS_SDK" in str(caught.value)
