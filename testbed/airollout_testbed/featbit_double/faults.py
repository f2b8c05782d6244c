"""Fault knobs, so reliability tests can make the double slow, failing or contended on purpose.

They act on the management API only (`/api/...`), never on health or `/_double` admin routes,
except the audit fault, which acts where FeatBit's own fails: on saving, so a write through the
double's Python helpers meets it too. Counted faults are consumed one request (or one saved write)
at a time. Dropping streaming connections is an action, not a state, so it lives on
`FeatBitDouble.drop_streaming_connections()` (and the admin route).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Faults"]

Counter = Literal["errors", "timeouts", "conflicts", "audit_failures"]

# Python attribute -> the camelCase name used by the `/_double/faults` admin route.
_JSON_NAMES = {
    "latency": "latency",
    "errors": "errors",
    "error_status": "errorStatus",
    "timeouts": "timeouts",
    "conflicts": "conflicts",
    "audit_failures": "auditFailures",
}


@dataclass
class Faults:
    """Current fault settings; assign fields directly or call `update`."""

    latency: float = 0.0
    """Seconds added before every management request is handled."""

    errors: int = 0
    """How many of the next management requests fail with `error_status` instead of being handled."""

    error_status: int = 503
    """The HTTP status of those failures."""

    timeouts: int = 0
    """How many of the next management requests get no answer for `DoubleConfig.timeout_hold` seconds
    (then 504); `FeatBitDouble.reset()` releases them early."""

    conflicts: int = 0
    """How many of the next `PUT .../targeting` calls find that someone else has just saved the flag:
    the flag gets a new revision, with an audit entry by another user, before the request's revision
    is checked, so the call gets 409 Conflict however fresh its revision was."""

    audit_failures: int = 0
    """How many of the next saved writes (flags or segments, any route) fail their audit-log insert
    as FeatBit's do on PostgreSQL: the change is committed (new revision, later `updatedAt`), but the
    request answers 500 InternalServerError, no audit entry is recorded and SDKs are not told until a
    later change or a reconnect. A rejected or no-op request does not consume one."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, counter: Counter) -> bool:
        """Consume one unit of a counted fault; False when none is left."""
        with self._lock:
            remaining: int = getattr(self, counter)
            if remaining <= 0:
                return False
            setattr(self, counter, remaining - 1)
            return True

    def update(self, **changes: Any) -> None:
        """Set several knobs at once, by Python name."""
        unknown = set(changes) - set(_JSON_NAMES)
        if unknown:
            raise TypeError(f"unknown fault knobs: {sorted(unknown)}")
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)

    def clear(self) -> None:
        defaults = Faults()
        self.update(**{name: getattr(defaults, name) for name in _JSON_NAMES})

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {json_name: getattr(self, name) for name, json_name in _JSON_NAMES.items()}

    def update_from_json(self, body: dict[str, Any]) -> None:
        """Apply the camelCase knobs present in `body`; all are checked before any changes."""
        python_names = {json_name: name for name, json_name in _JSON_NAMES.items()}
        changes: dict[str, Any] = {}
        for json_name, value in body.items():
            name = python_names.get(json_name)
            if name is None:
                raise ValueError(f"unknown fault knob {json_name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{json_name} must be a non-negative number")
            if name != "latency" and not isinstance(value, int):
                raise ValueError(f"{json_name} must be an integer")
            if name == "error_status" and not 400 <= value <= 599:
                raise ValueError("errorStatus must be an HTTP error status")
            changes[name] = float(value) if name == "latency" else value
        self.update(**changes)
