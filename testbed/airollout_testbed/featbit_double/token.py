"""FeatBit's secrets and tokens, encoded and decoded exactly as FeatBit does.

The double has to recognise the real SDK's connection token and hand out env secrets that the
real SDK and the evaluation server's structural checks accept (featbit-api.md §4.2). None of
this is cryptography: FeatBit obfuscates, it does not sign.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from dataclasses import dataclass

__all__ = [
    "ConnectionToken",
    "InvalidToken",
    "decode_connection_token",
    "encode_connection_token",
    "env_id_of_secret",
    "new_access_token",
    "new_env_secret",
]

_DIGITS = "0123456789"
_LETTERS = "QBWSPHDXZU"
_ENCODE = str.maketrans(_DIGITS, _LETTERS)
_DECODE = str.maketrans(_LETTERS, _DIGITS)
_GUID_LENGTH = 22
_SECRET_LENGTH = 2 * _GUID_LENGTH
_HEADER_LENGTH = 5


class InvalidToken(ValueError):
    """The string is not a FeatBit connection token or env secret."""


@dataclass(frozen=True)
class ConnectionToken:
    """What a streaming connection token carries: the env secret and when the token was built."""

    secret: str
    timestamp_ms: int


def _encode_number(number: int, length: int) -> str:
    return str(number).rjust(length, "0")[-length:].translate(_ENCODE)


def _decode_number(text: str) -> int:
    if not text or any(char not in _LETTERS for char in text):
        raise InvalidToken("not an encoded number")
    return int(text.translate(_DECODE))


def encode_connection_token(env_secret: str, timestamp_ms: int, split: int) -> str:
    """Build a token the way the SDKs do (`fbclient.utils.build_token`), with a chosen split point.

    The SDK picks `split` at random (at least 2); fixing it makes tokens reproducible in tests.
    """
    text = env_secret.rstrip("=")
    stamp = str(timestamp_ms)
    header = _encode_number(split, 3) + _encode_number(len(stamp), 2)
    return header + text[:split] + _encode_number(timestamp_ms, len(stamp)) + text[split:]


def decode_connection_token(token: str) -> ConnectionToken:
    """Recover the env secret and timestamp, with the same structural checks as FeatBit's `Token`."""
    if len(token) < _HEADER_LENGTH:
        raise InvalidToken("token header must be 5 characters")
    split = _decode_number(token[0:3])
    length = _decode_number(token[3:5])
    payload = token[_HEADER_LENGTH:]
    if len(payload) < split + length:
        raise InvalidToken("incomplete token payload")
    timestamp_ms = _decode_number(payload[split : split + length])
    secret = payload[:split] + payload[split + length :]
    # FeatBit pads the recovered secret to a multiple of 4 before checking its length.
    secret += "=" * (-len(secret) % 4)
    if len(secret) != _SECRET_LENGTH:
        raise InvalidToken("invalid secret")
    return ConnectionToken(secret=secret, timestamp_ms=timestamp_ms)


def _encode_guid(guid: uuid.UUID) -> str:
    # .NET's Guid.ToByteArray() is the little-endian layout, i.e. Python's bytes_le.
    encoded = base64.b64encode(guid.bytes_le).decode("ascii")
    return encoded.replace("/", "_").replace("+", "-")[:_GUID_LENGTH]


def _decode_guid(encoded: str) -> uuid.UUID:
    text = encoded.replace("_", "/").replace("-", "+") + "=="
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as error:
        raise InvalidToken("not an encoded GUID") from error
    return uuid.UUID(bytes_le=raw)


def new_env_secret(env_id: uuid.UUID) -> str:
    """A 44-character secret: a random encoded GUID followed by the encoded environment id."""
    return _encode_guid(uuid.uuid4()) + _encode_guid(env_id)


def env_id_of_secret(secret: str) -> uuid.UUID:
    """The environment a secret belongs to, as FeatBit's `Secret.TryParse` finds it."""
    if len(secret) != _SECRET_LENGTH:
        raise InvalidToken("a secret has 44 characters")
    env_id = _decode_guid(secret[_GUID_LENGTH:])
    if env_id.int == 0:
        raise InvalidToken("a secret must name an environment")
    return env_id


def new_access_token() -> str:
    """A management API access token shaped like FeatBit's (`api-` and a URL-safe random part)."""
    return "api-" + secrets.token_urlsafe(32)
