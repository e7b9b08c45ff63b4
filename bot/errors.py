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
    ├── ManifestError          the Teams app package cannot be built; ``message`` says what is wrong
    ├── GraphError             Microsoft Graph answered with an error (status, code, request id)
    │   ├── GraphAuthError         no token could be acquired (msal error)
    │   ├── GraphBadRequest        400
    │   ├── GraphForbidden         401/403: a permission or role is missing
    │   ├── GraphNotFound          404
    │   ├── GraphConflict          409/412
    │   ├── GraphThrottled         429 after every retry was spent
    │   ├── GraphUnavailable       5xx or a transport failure after every retry was spent
    │   └── GraphOutcomeUnknown    a non-idempotent POST may or may not have been carried out
    │                              (timeout, dropped connection, 5xx after sending); not
    │                              retried: read the state back before trying again
    └── TeamsError             the Bot Connector refused a post, reply or card update (status, code,
        │                      conversation id); 4xx other than 412/429 are not retried
        ├── TeamsThrottled         429 after every retry, or a Retry-After too long to wait for
        ├── TeamsUnavailable       412/502/503/504 or a transport failure after every retry
        └── TeamsOutcomeUnknown    a new post may or may not have landed (502/504, timeout or a
                                   connection lost after sending); not retried, since a second
                                   POST could leave two cards for one case
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


class ManifestError(RemediationError):
    """The Teams app package cannot be built (``remediation-bot manifest build``).

    ``message`` is one or more sentences, each naming what is wrong (a JSON path for a schema
    violation, the option or file at fault otherwise).
    """


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


class TeamsError(RemediationError):
    """Teams (the Bot Connector) refused a call, or kept failing it.

    ``status`` is the HTTP status (0 when no answer came), ``code`` Teams' error code (for
    example ``BotNotInConversationRoster``), ``conversation_id`` where the call went and
    ``attempts`` how many times it was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        conversation_id: str = "",
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.conversation_id = conversation_id
        self.attempts = attempts


class TeamsThrottled(TeamsError):
    """Teams kept answering 429, or asked for a wait longer than the bot is willing to hold a thread."""


class TeamsUnavailable(TeamsError):
    """Teams kept failing (412, 502, 503, 504, no answer) after every retry."""


class TeamsOutcomeUnknown(TeamsError):
    """A new channel post may or may not have landed; it was not sent again.

    The POST that starts a thread is not idempotent: after a gateway error (502/504), a timeout or
    a connection lost once the request was on its way, Teams may have created the post, and a
    second attempt could show two cards for one case, one of them never updated.
    """
