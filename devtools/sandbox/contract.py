"""The Graph contract the sandbox holds itself and its callers to (openapi-core validation).

The subset in ``contract/graph-v1.0-subset.yaml`` is a byte-identical copy of
``/work/shared/reference/graph/graph-v1.0-subset.yaml``; extension files add operations the
subset lacks. Building validators takes about half a second, so a contract is built once per
process for a given list of files.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema_path import SchemaPath
from openapi_core import V30RequestValidator, V30ResponseValidator
from openapi_core.datatypes import RequestParameters
from openapi_core.security.exceptions import SecurityProviderError
from openapi_core.security.factories import SecurityProviderFactory
from openapi_core.security.providers import BaseProvider
from openapi_spec_validator import validate as validate_spec
from werkzeug.datastructures import Headers, ImmutableMultiDict

CONTRACT_DIR = Path(__file__).parent / "contract"
SUBSET_PATH = CONTRACT_DIR / "graph-v1.0-subset.yaml"
SUBSET_SHA256 = "80ccff48bf5f919074ba6e2eab5f44172a2f67b8f59716afc5c96ad1e0eaaa24"
DEFAULT_EXTENSIONS: tuple[Path, ...] = (CONTRACT_DIR / "graph-extensions.yaml",)

# The spec's server is https://graph.microsoft.com/v1.0/; local paths are re-based onto it.
SPEC_HOST_URL = "https://graph.microsoft.com"
SPEC_PATH_PREFIX = "/v1.0"

# jsonschema messages quote whole alerts; a violation line needs the gist.
_MAX_MESSAGE_CHARS = 400


class _BearerProvider(BaseProvider):
    """The spec's oauth2 scheme as seen on the wire: an ``Authorization: Bearer`` header."""

    def __call__(self, parameters: RequestParameters) -> Any:
        value = str(parameters.header.get("Authorization", ""))
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SecurityProviderError("Missing bearer token in the Authorization header.")
        return token


class _GraphSecurityProviderFactory(SecurityProviderFactory):
    # openapi-core only warns "Unsupported scheme type" for oauth2 (an error under -W error).
    def __init__(self) -> None:
        self.PROVIDERS = {**SecurityProviderFactory.PROVIDERS, "oauth2": _BearerProvider}


@dataclass
class WireRequest:
    """A request as openapi-core's ``Request`` protocol wants it (it writes path parameters)."""

    method: str
    path: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None
    host_url: str = SPEC_HOST_URL


@dataclass(frozen=True)
class WireResponse:
    """A response as openapi-core's ``Response`` protocol wants it."""

    status_code: int
    content_type: str
    headers: Headers
    data: bytes | None


@dataclass(frozen=True)
class Contract:
    """The merged OpenAPI document and its validators."""

    document: Mapping[str, Any]
    request_validator: V30RequestValidator
    response_validator: V30ResponseValidator

    @staticmethod
    def wire_request(
        method: str,
        graph_path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        content_type: str,
        body: bytes,
    ) -> WireRequest:
        """Describe a local request; ``graph_path`` is the raw path after ``/v1.0``."""
        return WireRequest(
            method=method.lower(),
            path=SPEC_PATH_PREFIX + graph_path,
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(query)), header=Headers(dict(headers))
            ),
            content_type=content_type.lower(),
            body=body or None,
        )

    def request_problems(self, request: WireRequest) -> list[str]:
        """Every way the request breaks the contract (empty when it conforms)."""
        try:
            return [describe(e) for e in self.request_validator.iter_errors(request)]
        except Exception as exc:  # a validator crash must fail the test, not pass silently
            return [f"validator crashed: {describe(exc)}"]

    def response_problems(self, request: WireRequest, response: WireResponse) -> list[str]:
        """Every way the response to ``request`` breaks the contract (empty when it conforms)."""
        try:
            return [describe(e) for e in self.response_validator.iter_errors(request, response)]
        except Exception as exc:
            return [f"validator crashed: {describe(exc)}"]

    def enum(self, schema_name: str) -> frozenset[str]:
        """Members of an enum component schema, e.g. ``microsoft.graph.riskLevel``."""
        return frozenset(str(m) for m in self.document["components"]["schemas"][schema_name]["enum"])

    def properties(self, schema_name: str) -> frozenset[str]:
        """Property names of a component schema, its ``allOf`` bases included."""
        names: set[str] = set()
        pending = [self.document["components"]["schemas"][schema_name]]
        while pending:
            schema = pending.pop()
            ref = schema.get("$ref")
            if isinstance(ref, str):
                pending.append(self.document["components"]["schemas"][ref.rsplit("/", 1)[-1]])
                continue
            names.update(schema.get("properties", {}))
            pending.extend(schema.get("allOf", []))
        names.discard("@odata.type")
        return frozenset(names)


def describe(exc: BaseException) -> str:
    """The validator's message for a violation: the error and, when present, its schema errors."""
    parts = [str(exc) or type(exc).__name__]
    cause = exc.__cause__
    while cause is not None:
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            parts.append("; ".join(_schema_error(e) for e in schema_errors))
            break
        parts.append(str(cause) or type(cause).__name__)
        cause = cause.__cause__
    text = ": ".join(parts)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def _schema_error(error: Any) -> str:
    where = "/".join(str(p) for p in getattr(error, "absolute_path", ()))
    message = str(getattr(error, "message", error))
    return f"at /{where}: {message}" if where else message


def load_contract(extensions: Sequence[Path] = DEFAULT_EXTENSIONS) -> Contract:
    """The contract for the subset plus ``extensions``, built once per process per file list."""
    return _build(tuple(p.resolve() for p in (SUBSET_PATH, *extensions)))


@functools.lru_cache(maxsize=8)
def _build(files: tuple[Path, ...]) -> Contract:
    document = _read(files[0])
    for extension in files[1:]:
        merge_extension(document, _read(extension), source=str(extension))
    # A broken extension file should stop the sandbox, not produce puzzling violations later.
    validate_spec(document)
    spec = SchemaPath.from_dict(document)
    return Contract(
        document=document,
        request_validator=V30RequestValidator(
            spec, security_provider_factory=_GraphSecurityProviderFactory()
        ),
        response_validator=V30ResponseValidator(spec),
    )


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as stream:
        loaded = yaml.load(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not an OpenAPI document")
    return loaded


def merge_extension(base: dict[str, Any], extension: Mapping[str, Any], *, source: str) -> None:
    """Add an extension document's paths and components to ``base``; any clash is an error."""
    paths = base.setdefault("paths", {})
    for template, item in (extension.get("paths") or {}).items():
        target = paths.setdefault(template, {})
        for key, value in item.items():
            if key in target and target[key] != value:
                raise ValueError(f"{source}: {key.upper()} {template} is already in the contract")
            target[key] = value
    components = base.setdefault("components", {})
    for section, entries in (extension.get("components") or {}).items():
        target = components.setdefault(section, {})
        for name, value in (entries or {}).items():
            if name in target and target[name] != value:
                raise ValueError(f"{source}: components/{section}/{name} is already defined")
            target[name] = value
