"""The exceptions syncd raises, and what each one means for a pass.

Retry policy and the command line classify errors by *type*, never by message
text::

    SyncdError                  anything syncd raises on purpose
    ├── ConfigError             the configuration is wrong; fix it and rerun
    ├── DatabaseUnavailable     the database cannot be reached or is not migrated
    └── SourceError             a vendor call failed; the pass fails, nothing of
        │                       the page in hand is committed
        ├── TransientError      worth retrying with backoff; the subclass says why
        │   ├── RateLimited     429; carries the wait the server asked for
        │   ├── ServerError     5xx
        │   ├── RequestTimeout  the request timed out
        │   ├── ConnectionDropped  connecting failed or the connection broke
        │   └── BadBody         a body that is not JSON
        ├── WaitInterrupted     a retry wait was cut short: the daemon is stopping
        │                       or the pass ran past its maximum duration
        ├── AuthError           401/403: wrong, expired or revoked credentials
        ├── CertificateError    the vendor's TLS certificate failed verification:
        │                       not retried (trust its CA with ``ca_file``)
        ├── CredentialStoreError  the shared OAuth credentials could not be read,
        │                       locked or saved (a rotated token is kept and
        │                       saved before anything else next time)
        └── RequestRejected     any other 4xx: retrying would not help
            └── ContinuationRejected   a paging token the server no longer
                                       accepts; the pass restarts from its cursor

Malformed records are not exceptions of the pass: a connector turns each one
into a ``RejectedRecord`` and the pass goes on.
"""

from __future__ import annotations

from collections.abc import Sequence


class SyncdError(Exception):
    """Base class for every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The configuration is invalid. The message names the key and the fix.

    ``problems``: one line per problem (a message of several problems is those
    lines joined by newlines), so that every mistake is reported at once.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) if problems else (message,)

    @classmethod
    def of(cls, problems: Sequence[str]) -> ConfigError:
        """One error reporting every one of ``problems``."""
        return cls("\n".join(problems), problems)


class DatabaseUnavailable(SyncdError):
    """The database cannot be reached, or its schema is not current."""


class SourceError(SyncdError):
    """A call to a vendor API failed."""


class TransientError(SourceError):
    """A failure that may well succeed if retried later."""


class RateLimited(TransientError):
    """The vendor answered 429. ``retry_after`` is its wait hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(TransientError):
    """The vendor answered 5xx."""


class RequestTimeout(TransientError):
    """The request timed out (connect, read, write or pool)."""


class ConnectionDropped(TransientError):
    """Connecting failed, or the connection broke before a full answer."""


class BadBody(TransientError):
    """The vendor answered with a body that is not JSON."""


class WaitInterrupted(SourceError):
    """A retry wait ended early because the pass was asked to stop."""


class AuthError(SourceError):
    """The vendor refused the credentials (401/403)."""


class CertificateError(SourceError):
    """The vendor's TLS certificate failed verification (untrusted CA, wrong host, expired).

    Not transient: the same certificate fails the same way on every attempt.
    """


class CredentialStoreError(SourceError):
    """The source's shared OAuth credentials could not be read, locked or saved.

    The message never holds a token nor the SQL parameters of a failed statement.
    """


class RequestRejected(SourceError):
    """The vendor rejected the request (4xx other than 401/403/429).

    ``status`` and ``body`` (the parsed JSON error body, ``None`` when it was
    not JSON) let a connector recognise a rejection it can recover from by
    its structured content, never by parsing this exception's message.
    """

    def __init__(self, message: str, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ContinuationRejected(RequestRejected):
    """A continuation/paging token expired or was refused."""
