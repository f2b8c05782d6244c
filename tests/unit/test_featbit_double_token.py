"""The double's token and secret codecs agree with FeatBit's SDK and server (featbit-api.md §4.2)."""

from __future__ import annotations

import uuid

import pytest
from fbclient import utils as sdk_utils

from airollout_testbed.featbit_double.token import (
    InvalidToken,
    decode_connection_token,
    encode_connection_token,
    env_id_of_secret,
    new_access_token,
    new_env_secret,
)

# .NET's Guid.ToByteArray() of 00112233-4455-6677-8899-aabbccddeeff is 33 22 11 00 55 44 77 66 88 99 ...,
# whose URL-safe base64 starts with these 22 characters.
_DOTNET_GUID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
_DOTNET_ENCODED = "MyIRAFVEd2aImaq7zN3u_w"
_SECRET = "A" * 22 + _DOTNET_ENCODED


def test_secret_decodes_to_the_environment_in_its_second_half() -> None:
    assert env_id_of_secret(_SECRET) == _DOTNET_GUID


def test_new_secret_is_44_characters_and_names_its_environment() -> None:
    env_id = uuid.uuid4()
    secret = new_env_secret(env_id)
    assert len(secret) == 44
    assert new_env_secret(_DOTNET_GUID).endswith(_DOTNET_ENCODED)
    assert env_id_of_secret(secret) == env_id


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("", id="empty"),
        pytest.param(_SECRET[:-1], id="43-characters"),
        pytest.param("A" * 22 + "A" * 22, id="empty-guid"),
        pytest.param("A" * 22 + "!" * 22, id="not-base64"),
    ],
)
def test_secret_that_does_not_name_an_environment_is_rejected(secret: str) -> None:
    with pytest.raises(InvalidToken):
        env_id_of_secret(secret)


def test_token_is_byte_for_byte_what_the_sdk_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_utils, "random", lambda: 0.5)
    monkeypatch.setattr(sdk_utils, "unix_timestamp_in_milliseconds", lambda: 1_767_225_600_123)
    sdk_token = sdk_utils.build_token(_SECRET)
    assert encode_connection_token(_SECRET, 1_767_225_600_123, split=22) == sdk_token


@pytest.mark.parametrize("attempt", range(20))
def test_sdk_token_decodes_to_its_secret_and_build_time(attempt: int) -> None:
    secret = new_env_secret(uuid.uuid4())
    before = sdk_utils.unix_timestamp_in_milliseconds()
    token = decode_connection_token(sdk_utils.build_token(secret))
    assert token.secret == secret
    assert before <= token.timestamp_ms <= sdk_utils.unix_timestamp_in_milliseconds()


def test_split_at_either_end_round_trips() -> None:
    for split in (2, 44):
        token = decode_connection_token(encode_connection_token(_SECRET, 42, split=split))
        assert (token.secret, token.timestamp_ms) == (_SECRET, 42)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("QQW", id="short-header"),
        pytest.param("QQ1BSAAA", id="digit-in-header"),
        pytest.param("QWWBS" + "A" * 10, id="incomplete-payload"),
        pytest.param(encode_connection_token(_SECRET[:40], 123, split=4), id="secret-too-short"),
        pytest.param("QQWBS" + "AA" + "QQ!" + "A" * 42, id="timestamp-not-encoded"),
    ],
)
def test_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidToken):
        decode_connection_token(token)


def test_access_token_looks_like_featbits() -> None:
    token = new_access_token()
    assert token.startswith("api-")
    assert len(token) > 40
    assert token != new_access_token()
