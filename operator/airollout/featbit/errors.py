"""The ways talking to FeatBit can fail, as exceptions a platform engineer can act on.

FeatBit answers most failures with a bare code (`Forbidden`, `Conflict`, `KeyHasBeenUsed`) and some with a
misleading status (403 for an unknown flag on flag-scoped routes). Each class here names one cause the
operator reacts to differently, and its message says what to check. No message ever contains the access
token: the client builds them from the route, the status and FeatBit's error codes only.
"""

from __future__ import annotations

__all__ = [
    "FeatBitError",
    "FeatBitRejected",
    "FeatBitUnavailable",
    "FlagNotFound",
    "InvalidToken",
    "PermissionDenied",
    "RevisionConflict",
    "SegmentNotFound",
    "VariationNotFound",
]


class FeatBitError(Exception):
    """Anything that went wrong between the operator and FeatBit.

    `status` is the HTTP status FeatBit answered with (None when no answer came back) and `codes` the error
    codes of FeatBit's `{success, errors, data}` envelope, e.g. `("KeyHasBeenUsed",)`.
    """

    def __init__(self, message: str, *, status: int | None = None, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


class InvalidToken(FeatBitError):
    """FeatBit did not accept the access token (401)."""


class PermissionDenied(FeatBitError):
    """FeatBit refused the call (403): a missing permission, or an unknown flag, segment or environment."""


class FlagNotFound(FeatBitError):
    """The flag key does not exist in the environment."""


class SegmentNotFound(FeatBitError):
    """A segment key or id does not exist in the environment."""


class RevisionConflict(FeatBitError):
    """The flag changed between reading it and writing it (409), more often than the caller tolerates."""


class FeatBitRejected(FeatBitError):
    """FeatBit understood the request and refused it (400, 422, or 200 with `success: false`)."""


class FeatBitUnavailable(FeatBitError):
    """FeatBit could not be reached or kept failing (5xx, connection errors, timeouts) after retries."""


class VariationNotFound(FeatBitError, ValueError):
    """A rollout names a variation id the flag does not have.

    Also a `ValueError`: it is a configuration mistake found before any request is sent.
    """
