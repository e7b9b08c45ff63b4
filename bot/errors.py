"""The one exception tree of remediation-bot.

Every error the bot raises on purpose derives from :class:`RemediationError`. Each carries a
``message`` written for a person (a responder, or the admin reading a start-up error); the edge
(the aiohttp handlers and the Teams activity handler) catches these once, turns them into a card,
a thread reply or an HTTP status, and logs one line with the case, request and activity ids bound.

    RemediationError
    ├── ConfigError            a setting is missing or wrong; names the variable
    ├── StoreError
    │   ├── ConflictError      a compare-and-swap lost after its retries
    │   └── DuplicateError     a uniqueness rule refused the write (e.g. a second active request)
    ├── RefusedError           a responder's click was refused; ``message`` says why
    └── GraphError             Microsoft Graph answered with an error (status, code, request id)
        ├── GraphAuthError         no token could be acquired (msal error)
        ├── GraphBadRequest        400
        ├── GraphForbidden         401/403: a permission or role is missing
        ├── GraphNotFound          404
        ├── GraphConflict          409/412
        ├── GraphThrottled         429 after every retry was spent
        ├── GraphUnavailable       5xx or a transport failure after every retry was spent
        └── GraphOutcomeUnknown    a non-idempotent POST may or may not have been carried out
                                   (timeout, dropped connection, 5xx after sending); not
                                   retried: read the state back before trying again
"""

from __future__ import annotations


class RemediationError(Exception):
    """Base of every error the bot raises on purpose; ``message`` is for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RemediationError):
    """A setting is missing or invalid. ``variable`` names the environment variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class StoreError(RemediationError):
    """The state store failed."""


class ConflictError(StoreError):
    """A compare-and-swap write kept losing to concurrent writers."""


class DuplicateError(StoreError):
    """A uniqueness rule refused the write: the thing exists already."""


class RefusedError(RemediationError):
    """A request from a responder was refused; ``message`` is the reason shown to them."""


class GraphError(RemediationError):
    """Microsoft Graph answered with an error.

    ``status`` is the HTTP status (0 for transport failures), ``code`` the Graph error code,
    ``request_id`` the ``request-id`` header Microsoft support asks for.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        request_id: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.method = method
        self.path = path


class GraphAuthError(GraphError):
    """No access token could be acquired for Microsoft Graph."""


class GraphBadRequest(GraphError):
    """Graph rejected the request as malformed (400)."""


class GraphForbidden(GraphError):
    """Graph refused the call (401/403): a permission or directory role is missing."""


class GraphNotFound(GraphError):
    """The object does not exist (404)."""


class GraphConflict(GraphError):
    """Graph reported a conflict or failed precondition (409/412)."""


class GraphThrottled(GraphError):
    """Graph kept answering 429 after every retry."""


class GraphUnavailable(GraphError):
    """Graph kept failing (5xx, timeout, connection error) after every retry."""


class GraphOutcomeUnknown(GraphError):
    """A non-idempotent Graph call (e.g. invokeAction) may or may not have taken effect.

    The request may have reached Graph before the answer was lost (a timeout, a dropped
    connection, a gateway error), so the client did not send it again: doing so could carry the
    action out twice. Deliberately not a :class:`GraphUnavailable`, which means "nothing
    happened, try later". Read the state back to learn what happened.
    """
