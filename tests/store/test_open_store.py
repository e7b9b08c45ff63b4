"""Choosing a store by URL: ``open_store``, the STORE_URL check at start, ``remediation-bot migrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.cli.main import main
from bot.config.settings import load_settings
from bot.errors import ConfigError, StoreError
from bot.store import open_store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import MIGRATIONS, SqliteStore

SECRET = "s3cret-Pa55word"
REQUIRED: dict[str, Any] = {
    "sandbox_mode": True,
    "microsoft_app_id": "",
    "graph_tenant_id": "tenant",
    "graph_client_id": "client",
    "graph_client_secret": "secret",
    "teams_channel_id": "19:incidents@thread.tacv2",
}


async def test_the_url_scheme_picks_the_store(store_url: str) -> None:
    store = await open_store(store_url)
    try:
        assert isinstance(store, SqliteStore if store_url.startswith("sqlite") else PostgresStore)
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_scheme_alias_is_accepted(postgres_url: str) -> None:
    store = await open_store(postgres_url.replace("postgresql://", "postgres://", 1))
    try:
        assert isinstance(store, PostgresStore)
    finally:
        await store.close()


async def test_an_unknown_scheme_names_store_url_without_echoing_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store(f"mysql://bot:{SECRET}@db/rb")
    assert caught.value.variable == "STORE_URL" and "mysql://" in caught.value.message
    assert SECRET not in caught.value.message


async def test_an_unusable_sqlite_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        await open_store(f"sqlite:///{tmp_path}")  # a directory


@pytest.mark.parametrize(
    "url",
    ["sqlite:///data/bot.db", "postgresql://bot:pw@db:5432/rb?sslmode=require", "postgres://bot@db/rb"],
)
def test_settings_accept_both_backends(url: str) -> None:
    assert load_settings(**REQUIRED, store_url=url).store_url.get_secret_value() == url


def test_settings_refuse_another_scheme_without_echoing_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**REQUIRED, store_url=f"mysql://bot:{SECRET}@db/rb")
    assert caught.value.variable == "STORE_URL"
    assert "postgresql://" in caught.value.message and SECRET not in caught.value.message


def test_migrate_applies_the_migrations_and_prints_the_version(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--store-url", store_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"schema at version {len(MIGRATIONS)}")
    # Again: nothing left to apply, same version.
    assert main(["migrate", "--store-url", store_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"schema at version {len(MIGRATIONS)}")


def test_migrate_reads_store_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["migrate"]) == 0
    assert (tmp_path / "env.db").is_file()
    assert f"schema at version {len(MIGRATIONS)}" in capsys.readouterr().out


def test_migrate_explains_an_unreachable_server_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["migrate", "--store-url", f"postgresql://bot:{SECRET}@127.0.0.1:1/rb"]) == 2
    captured = capsys.readouterr()
    assert "Connection refused" in captured.err and "bot:***@127.0.0.1:1" in captured.err
    assert SECRET not in captured.out + captured.err
