"""The access tokens the double accepts, each with a name and a policy, as FeatBit's service tokens have.

Reliability tests need tokens that FeatBit would refuse some calls to, and to widen or narrow a token's
policy while the operator holds it (someone fixing the token in FeatBit's UI). The double's own token, the
one it starts with, may do everything until a test says otherwise, so tests that do not care about
permissions never meet a 403. Writes are attributed to the token that made them: its name is what the
audit log shows as `creatorName`.
"""

from __future__ import annotations

import hmac
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace

from airollout_testbed.featbit_double.permissions import ALL_ACTIONS, Policy
from airollout_testbed.featbit_double.store import Actor
from airollout_testbed.featbit_double.token import new_access_token

__all__ = ["AccessToken", "AccessTokens", "UnknownToken"]

_EMAIL = "Access token"  # what FeatBit's audit log shows for any change made with an access token


class UnknownToken(KeyError):
    """No token with that value was minted."""


@dataclass(frozen=True)
class AccessToken:
    value: str
    actor: Actor
    policy: Policy

    def to_json(self) -> dict[str, object]:
        return {"token": self.value, "name": self.actor.name, **self.policy.to_json()}


class AccessTokens:
    """The double's own token plus any minted since the last `reset`; safe to use from any thread."""

    def __init__(self, own_value: str, own_name: str) -> None:
        self._lock = threading.Lock()
        self.own = AccessToken(own_value, Actor(id=str(uuid.uuid4()), name=own_name, email=_EMAIL), Policy())
        self._tokens = {own_value: self.own}

    def find(self, value: str) -> AccessToken | None:
        """The token sent in `Authorization`, compared in constant time as a secret should be."""
        with self._lock:
            tokens = list(self._tokens.values())
        found = None
        for token in tokens:
            if hmac.compare_digest(token.value.encode(), value.encode()):
                found = token
        return found

    def mint(self, name: str, *, allow: Iterable[str] = (ALL_ACTIONS,), deny: Iterable[str] = ()) -> AccessToken:
        """A new token (`api-...`) with this name and policy."""
        if not name.strip():
            raise ValueError("a token needs a name: the audit log shows it")
        policy = Policy.of(allow=allow, deny=deny)
        token = AccessToken(new_access_token(), Actor(str(uuid.uuid4()), name, _EMAIL), policy)
        with self._lock:
            self._tokens[token.value] = token
        return token

    def set_policy(self, value: str, *, allow: Iterable[str] = (ALL_ACTIONS,), deny: Iterable[str] = ()) -> AccessToken:
        """Replace a token's policy; it applies from the next request."""
        policy = Policy.of(allow=allow, deny=deny)
        with self._lock:
            if value not in self._tokens:
                raise UnknownToken("no such access token")
            token = self._tokens[value] = replace(self._tokens[value], policy=policy)
        return token

    def reset(self) -> None:
        """Forget minted tokens and give the double's own token every permission again."""
        with self._lock:
            self._tokens = {self.own.value: self.own}
