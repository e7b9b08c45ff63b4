"""Settings, loaded once at start from the environment (and an optional ``.env`` file).

Every variable is documented in ``.env.example``. :func:`load_settings` turns any problem into a
:class:`~bot.errors.ConfigError` that names the variable, so a misconfigured deployment stops at
start-up with one readable line instead of failing on the first alert.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.domain.audit import SANDBOX_AUDIT_KEY, AuditKey
from bot.errors import ConfigError

log = logging.getLogger(__name__)

AppType = Literal["MultiTenant", "SingleTenant", "UserAssignedMSI"]
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _env(name: str) -> Any:
    """Field alias: the exact environment variable name (case-insensitive lookup)."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """Typed configuration. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=True, case_sensitive=False
    )

    # Bot Framework (the names Azure Bot Service and the botbuilder samples use).
    microsoft_app_id: str = Field("", validation_alias=_env("MicrosoftAppId"))
    microsoft_app_password: SecretStr = Field(
        SecretStr(""), validation_alias=_env("MicrosoftAppPassword"), repr=False
    )
    microsoft_app_tenant_id: str = Field("", validation_alias=_env("MicrosoftAppTenantId"))
    microsoft_app_type: AppType = Field("SingleTenant", validation_alias=_env("MicrosoftAppType"))
    sandbox_mode: bool = Field(False, validation_alias=_env("SANDBOX_MODE"))
    # The SDK that carries Teams traffic (README "Teams SDK"): botbuilder, or the Microsoft 365 Agents SDK.
    teams_sdk: Literal["botbuilder", "agents"] = Field("botbuilder", validation_alias=_env("TEAMS_SDK"))

    # Microsoft Graph (app-only: client secret or certificate).
    graph_tenant_id: str = Field("", validation_alias=_env("GRAPH_TENANT_ID"))
    graph_client_id: str = Field("", validation_alias=_env("GRAPH_CLIENT_ID"))
    graph_client_secret: SecretStr = Field(
        SecretStr(""), validation_alias=_env("GRAPH_CLIENT_SECRET"), repr=False
    )
    graph_certificate_path: str = Field("", validation_alias=_env("GRAPH_CERTIFICATE_PATH"))
    graph_certificate_thumbprint: str = Field("", validation_alias=_env("GRAPH_CERTIFICATE_THUMBPRINT"))
    # "system" or "user": Graph tokens come from the host's managed identity (no secret at all);
    # for "user", GRAPH_CLIENT_ID is the user-assigned identity's client id.
    graph_managed_identity: Literal["", "system", "user"] = Field(
        "", validation_alias=_env("GRAPH_MANAGED_IDENTITY")
    )
    graph_authority_host: str = Field(
        "https://login.microsoftonline.com", validation_alias=_env("GRAPH_AUTHORITY_HOST")
    )
    graph_base_url: str = Field("https://graph.microsoft.com/v1.0", validation_alias=_env("GRAPH_BASE_URL"))
    graph_ca_bundle: str = Field("", validation_alias=_env("GRAPH_CA_BUNDLE"))
    # Entra ID Protection allows one request per second per tenant: keep 1 in production.
    graph_identity_protection_interval: float = Field(
        1.0, ge=0, le=10, validation_alias=_env("GRAPH_IDENTITY_PROTECTION_INTERVAL")
    )
    graph_timeout_seconds: float = Field(10.0, gt=0, le=120, validation_alias=_env("GRAPH_TIMEOUT_SECONDS"))
    # Bulk actions: JSON batches (20 requests each) in flight at once (bot.tenant.batch).
    graph_batch_concurrency: int = Field(4, ge=1, le=20, validation_alias=_env("GRAPH_BATCH_CONCURRENCY"))

    # After an action: re-check eventually consistent state, and write back to the alerts.
    verify_recheck_seconds: float = Field(120.0, gt=0, validation_alias=_env("VERIFY_RECHECK_SECONDS"))
    alert_status_after_action: Literal["", "inProgress", "resolved"] = Field(
        "", validation_alias=_env("ALERT_STATUS_AFTER_ACTION")
    )

    # Teams and the people allowed to act.
    teams_channel_id: str = Field("", validation_alias=_env("TEAMS_CHANNEL_ID"))
    responders: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("RESPONDERS")
    )
    # The policy file (bot.config.policy_file); without one, RESPONDERS both request and approve.
    policy_file: str = Field("", validation_alias=_env("POLICY_FILE"))

    # Push intake (POST /api/alerts): HMAC-SHA256 shared secret; empty turns the endpoint off.
    push_shared_secret: SecretStr = Field(
        SecretStr(""), validation_alias=_env("PUSH_SHARED_SECRET"), repr=False
    )

    # The audit chain's HMAC key (from Key Vault); never stored with the events. Required unless
    # SANDBOX_MODE, which then uses the public sandbox key (bot.domain.audit.SANDBOX_AUDIT_SECRET).
    audit_hmac_key: SecretStr = Field(SecretStr(""), validation_alias=_env("AUDIT_HMAC_KEY"), repr=False)

    # How often one card may be updated by incoming alerts (a storm updates it once per window).
    card_update_coalesce_seconds: float = Field(
        3.0, ge=0, le=60, validation_alias=_env("CARD_UPDATE_COALESCE_SECONDS")
    )

    # Executions run as jobs any replica can claim; a claim lapses after the lease (a dead
    # replica's run is resumed by another, which reads the state back instead of re-sending).
    # A live worker renews its lease every third of it, so the lease is how long a dead or
    # stopped replica's run waits before another takes it over, not a limit on how long it runs.
    job_lease_seconds: float = Field(60.0, ge=1, le=3600, validation_alias=_env("JOB_LEASE_SECONDS"))
    # The same for posting or updating a card: a replica sending a card holds its lease, renewed
    # while Teams' retries run, so two replicas never send one card at once.
    card_lease_seconds: float = Field(60.0, ge=1, le=3600, validation_alias=_env("CARD_LEASE_SECONDS"))
    job_poll_seconds: float = Field(2.0, gt=0, le=60, validation_alias=_env("JOB_POLL_SECONDS"))

    # Intake.
    poll_interval_seconds: float = Field(60.0, validation_alias=_env("POLL_INTERVAL_SECONDS"))
    poll_lookback_minutes: int = Field(1440, ge=1, le=43200, validation_alias=_env("POLL_LOOKBACK_MINUTES"))

    # State and the HTTP listener.
    # A secret: a PostgreSQL URL holds the database password.
    store_url: SecretStr = Field(
        SecretStr("sqlite:///data/remediation-bot.db"), validation_alias=_env("STORE_URL"), repr=False
    )
    # Azure Database for PostgreSQL with Entra ID authentication: each connection's password is an
    # access token of the bot's own credential (the managed identity); STORE_URL holds no password.
    store_entra_auth: bool = Field(False, validation_alias=_env("STORE_ENTRA_AUTH"))
    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    port: int = Field(3978, ge=1, le=65535, validation_alias=_env("PORT"))
    # /metrics is unauthenticated, so it is never on the public port unless asked for: a port of
    # its own (METRICS_PORT, on METRICS_HOST) for the scraper, or METRICS_ON_MAIN_PORT=true where
    # the main port is private anyway.
    # The audit trail streamed to a Log Analytics / Sentinel table (Logs Ingestion API): the data
    # collection endpoint's logs ingestion URL, the rule's immutable id and its stream. Off when empty.
    audit_ingestion_endpoint: str = Field("", validation_alias=_env("AUDIT_INGESTION_ENDPOINT"))
    audit_ingestion_rule_id: str = Field("", validation_alias=_env("AUDIT_INGESTION_RULE_ID"))
    audit_ingestion_stream: str = Field(
        "Custom-RemediationBotAudit_CL", validation_alias=_env("AUDIT_INGESTION_STREAM")
    )
    audit_ingestion_interval_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("AUDIT_INGESTION_INTERVAL_SECONDS")
    )
    metrics_port: int = Field(0, ge=0, le=65535, validation_alias=_env("METRICS_PORT"))
    metrics_host: str = Field("127.0.0.1", validation_alias=_env("METRICS_HOST"))
    metrics_on_main_port: bool = Field(False, validation_alias=_env("METRICS_ON_MAIN_PORT"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    # json: one JSON object per line with the bound ids as fields (for a log pipeline); text:
    # key=value lines for a person. Empty: json, except text in SANDBOX_MODE (the local demo).
    log_format: Literal["", "json", "text"] = Field("", validation_alias=_env("LOG_FORMAT"))

    # Links shown on cards and in thread replies.
    defender_portal_url: str = Field(
        "https://security.microsoft.com", validation_alias=_env("DEFENDER_PORTAL_URL")
    )
    entra_portal_url: str = Field("https://entra.microsoft.com", validation_alias=_env("ENTRA_PORTAL_URL"))

    # The approval page (GET /approve/<case>): the bot's public base URL; empty turns it off. People
    # sign in there with Entra ID through the Graph app registration (GRAPH_CLIENT_ID), whose Web
    # redirect URIs must hold <APPROVAL_PAGE_URL>/approve/callback.
    approval_page_url: str = Field("", validation_alias=_env("APPROVAL_PAGE_URL"))
    # Encrypts and authenticates the page's cookies (sessions, sign-ins in flight): 32+ random
    # characters, the same on every replica, from Key Vault.
    approval_page_session_key: SecretStr = Field(
        SecretStr(""), validation_alias=_env("APPROVAL_PAGE_SESSION_KEY"), repr=False
    )
    approval_page_session_minutes: int = Field(
        15, ge=1, le=60, validation_alias=_env("APPROVAL_PAGE_SESSION_MINUTES")
    )

    @field_validator("responders", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if not self.microsoft_app_id and not self.sandbox_mode:
            raise ValueError(
                "MicrosoftAppId|is required: set it to the bot's Microsoft app id "
                "(or set SANDBOX_MODE=true to run the local demo with authentication off)"
            )
        if self.microsoft_app_id:
            if (
                self.microsoft_app_type != "UserAssignedMSI"
                and not self.microsoft_app_password.get_secret_value()
            ):
                raise ValueError(
                    "MicrosoftAppPassword|is required when MicrosoftAppId is set "
                    f"and MicrosoftAppType is {self.microsoft_app_type}"
                )
            # A single-tenant bot lives in the tenant it serves (the two must name the same
            # directory anyway), so an empty MicrosoftAppTenantId takes GRAPH_TENANT_ID's.
            if (
                self.microsoft_app_type != "MultiTenant"
                and not self.microsoft_app_tenant_id.strip()
                and not self.graph_tenant_id.strip()
            ):
                raise ValueError(
                    f"MicrosoftAppTenantId|is required when MicrosoftAppType is {self.microsoft_app_type}"
                )
        for variable, value in (
            ("GRAPH_TENANT_ID", self.graph_tenant_id),
            ("GRAPH_CLIENT_ID", self.graph_client_id),
            ("TEAMS_CHANNEL_ID", self.teams_channel_id),
        ):
            if not value:
                raise ValueError(f"{variable}|is required")
        app_tenant, graph_tenant = self.microsoft_app_tenant_id.strip(), self.graph_tenant_id.strip()
        if app_tenant and app_tenant.lower() != graph_tenant.lower():
            # Activities are accepted from one tenant only; two settings naming different
            # tenants would leave it unclear whose clicks count.
            raise ValueError(
                f"MicrosoftAppTenantId|must name the same tenant as GRAPH_TENANT_ID (got {app_tenant} "
                f"and {graph_tenant}): the bot serves one tenant, so set both to its directory (tenant) "
                "id, or leave MicrosoftAppTenantId empty"
            )
        if self.graph_managed_identity:
            if self.graph_client_secret.get_secret_value() or self.graph_certificate_path:
                # One credential only: a secret left beside the managed identity would be a
                # secret to protect and rotate for nothing, and unclear which one is used.
                raise ValueError(
                    "GRAPH_MANAGED_IDENTITY|is set, so GRAPH_CLIENT_SECRET and GRAPH_CERTIFICATE_PATH "
                    "must be empty: the managed identity is the Graph credential"
                )
        elif not self.graph_client_secret.get_secret_value() and not self.graph_certificate_path:
            raise ValueError(
                "GRAPH_CLIENT_SECRET|is required unless GRAPH_CERTIFICATE_PATH or "
                "GRAPH_MANAGED_IDENTITY is set"
            )
        if self.graph_certificate_path:
            if not self.graph_certificate_thumbprint:
                raise ValueError("GRAPH_CERTIFICATE_THUMBPRINT|is required with GRAPH_CERTIFICATE_PATH")
            if not Path(self.graph_certificate_path).is_file():
                raise ValueError(f"GRAPH_CERTIFICATE_PATH|no such file: {self.graph_certificate_path}")
        if self.policy_file:
            if not Path(self.policy_file).is_file():
                raise ValueError(f"POLICY_FILE|no such file: {self.policy_file}")
            if self.responders:
                # Two lists of who may act would leave an admin guessing which one counts.
                raise ValueError(
                    "RESPONDERS|must be empty when POLICY_FILE is set: list the responders "
                    "in the policy file instead"
                )
        if self.graph_ca_bundle and not Path(self.graph_ca_bundle).is_file():
            raise ValueError(f"GRAPH_CA_BUNDLE|no such file: {self.graph_ca_bundle}")
        for variable, url in (
            ("GRAPH_AUTHORITY_HOST", self.graph_authority_host),
            ("GRAPH_BASE_URL", self.graph_base_url),
        ):
            if not url.startswith("https://"):
                raise ValueError(f"{variable}|must be an https:// URL, got {url!r}")
        store_url = self.store_url.get_secret_value()
        if not store_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            # Only the scheme is echoed: the rest of a database URL may hold a password.
            got = store_url.split("://", 1)[0] + "://" if "://" in store_url else "no scheme://"
            raise ValueError(
                "STORE_URL|must look like sqlite:///path/to/file.db or "
                f"postgresql://user:password@host:5432/dbname, got {got}"
            )
        audit_key = self.audit_hmac_key.get_secret_value()
        if not audit_key and not self.sandbox_mode:
            raise ValueError(
                "AUDIT_HMAC_KEY|is required: the audit trail is keyed with it so that an edit of the "
                "database cannot be hidden; set it to a random value of 32+ characters, kept in Key Vault "
                "and nowhere near the database (only SANDBOX_MODE=true runs without it, on a public key)"
            )
        if audit_key and len(audit_key) < 32:
            raise ValueError("AUDIT_HMAC_KEY|must be at least 32 characters (use a random value)")
        push_secret = self.push_shared_secret.get_secret_value()
        if push_secret and len(push_secret) < 32:
            raise ValueError("PUSH_SHARED_SECRET|must be at least 32 characters (use a random value)")
        if self.store_entra_auth:
            if not store_url.startswith(("postgresql://", "postgres://")):
                raise ValueError("STORE_ENTRA_AUTH|is for a PostgreSQL STORE_URL only")
            if urlsplit(store_url).password:
                raise ValueError(
                    "STORE_URL|must hold no password when STORE_ENTRA_AUTH is true: the password of "
                    "each connection is an Entra ID token (postgresql://<identity name>@host:5432/db)"
                )
        if bool(self.audit_ingestion_endpoint) != bool(self.audit_ingestion_rule_id):
            missing = (
                "AUDIT_INGESTION_RULE_ID" if self.audit_ingestion_endpoint else "AUDIT_INGESTION_ENDPOINT"
            )
            raise ValueError(
                f"{missing}|is required with the other AUDIT_INGESTION_ setting: the audit stream needs "
                "the data collection endpoint's URL and the rule's immutable id (dcr-...)"
            )
        if self.audit_ingestion_endpoint and not self.audit_ingestion_endpoint.startswith("https://"):
            raise ValueError(
                f"AUDIT_INGESTION_ENDPOINT|must be an https:// URL, got {self.audit_ingestion_endpoint!r}"
            )
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(
                "METRICS_PORT|must differ from PORT: /metrics has no authentication and the bot's "
                "port is public (set METRICS_ON_MAIN_PORT=true instead if that port is private)"
            )
        if self.poll_interval_seconds <= 0:
            raise ValueError("POLL_INTERVAL_SECONDS|must be greater than 0")
        self._check_approval_page()
        return self

    def _check_approval_page(self) -> None:
        url = self.approval_page_url.strip()
        if not url:
            return
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback and self.sandbox_mode):
            raise ValueError(
                "APPROVAL_PAGE_URL|must be an https:// URL (http:// only on loopback with SANDBOX_MODE), "
                f"got {url!r}"
            )
        if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(
                f"APPROVAL_PAGE_URL|must be a plain base URL such as https://bot.contoso.com, got {url!r}"
            )
        if parts.path not in ("", "/"):
            raise ValueError(
                "APPROVAL_PAGE_URL|must be the bot's origin without a path (the page lives at "
                f"/approve/...), got {url!r}"
            )
        if self.graph_managed_identity:
            # A person's sign-in code is redeemed by an app registration with its own credential;
            # a managed identity has no redirect URIs and cannot.
            raise ValueError(
                "APPROVAL_PAGE_URL|needs the Graph app registration's own credential "
                "(GRAPH_CLIENT_SECRET or GRAPH_CERTIFICATE_PATH) to sign people in; with "
                "GRAPH_MANAGED_IDENTITY, leave APPROVAL_PAGE_URL empty"
            )
        key = self.approval_page_session_key.get_secret_value()
        if not key and not self.sandbox_mode:
            raise ValueError(
                "APPROVAL_PAGE_SESSION_KEY|is required with APPROVAL_PAGE_URL: 32+ random characters, "
                "the same on every replica, kept in Key Vault"
            )
        if key and len(key) < 32:
            raise ValueError("APPROVAL_PAGE_SESSION_KEY|must be at least 32 characters (use a random value)")

    @property
    def approval_page_base(self) -> str:
        """The approval page's origin without a trailing slash; empty when the page is off."""
        return self.approval_page_url.strip().rstrip("/")

    @property
    def approval_redirect_uri(self) -> str:
        """The redirect URI the app registration must list for the approval page's sign-in."""
        return f"{self.approval_page_base}/approve/callback" if self.approval_page_base else ""

    @property
    def auth_enabled(self) -> bool:
        """Inbound Bot Framework JWT validation is on whenever an app id is configured."""
        return bool(self.microsoft_app_id)

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        """``LOG_FORMAT``, else JSON outside the local demo."""
        if self.log_format:
            return self.log_format
        return "text" if self.sandbox_mode else "json"

    @property
    def tenant_id(self) -> str:
        """The one tenant whose Teams activities the bot accepts (compared case-insensitively).

        ``MicrosoftAppTenantId`` when set, else ``GRAPH_TENANT_ID``; when both are set they must
        agree (checked at start).
        """
        return (self.microsoft_app_tenant_id or self.graph_tenant_id).strip().lower()

    @property
    def audit_key(self) -> AuditKey:
        """The key audit events are chained with: ``AUDIT_HMAC_KEY``, or in sandbox mode without
        one the public sandbox key (events keyed with it are not tamper-evident)."""
        secret = self.audit_hmac_key.get_secret_value()
        return AuditKey.from_secret(secret) if secret else SANDBOX_AUDIT_KEY

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file named by ``STORE_URL``."""
        return Path(self.store_url.get_secret_value().removeprefix("sqlite:///"))


def _env_name(alias: object, field: str) -> str:
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else field


ENV_NAMES: dict[str, str] = {
    name: _env_name(field.validation_alias, name) for name, field in Settings.model_fields.items()
}
"""Each setting's environment variable, by field name."""
_FIELD_TO_ENV = ENV_NAMES


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming the variable at fault.

    ``overrides`` (field names) win over the environment; the demo and the tests use them.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    if not settings.auth_enabled:
        log.warning(
            "AUTHENTICATION IS OFF: MicrosoftAppId is empty and SANDBOX_MODE is on. "
            "Anyone who can reach this port can talk to the bot. Never run this way in a tenant."
        )
    if not settings.audit_hmac_key.get_secret_value():
        log.warning(
            "AUDIT_HMAC_KEY is not set (SANDBOX_MODE): the audit trail is keyed with the public "
            "sandbox key %s, so it is not tamper-evident. Never run this way in a tenant.",
            SANDBOX_AUDIT_KEY.key_id,
        )
    if settings.auth_enabled and not _GUID.fullmatch(settings.tenant_id):
        variable = "MicrosoftAppTenantId" if settings.microsoft_app_tenant_id else "GRAPH_TENANT_ID"
        log.warning(
            "%s is %r, not a directory (tenant) id: Teams names the tenant of every activity by its "
            "GUID, so every activity will be refused until it is one.",
            variable,
            settings.tenant_id,
        )
    if not settings.responders and not settings.policy_file:
        log.warning("RESPONDERS is empty: nobody can act on a case until it lists someone.")
    return settings


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    if "|" in message:
        variable, problem = message.split("|", 1)
        return ConfigError(variable, problem)
    location = first.get("loc", ())
    field = str(location[0]) if location else ""
    variable = _FIELD_TO_ENV.get(field, field)
    model_field = Settings.model_fields.get(field)
    if model_field is not None and not model_field.repr:
        return ConfigError(variable, message)  # a secret: never echo its value
    return ConfigError(variable, f"{message} (got {first.get('input')!r})")
