"""The pure signature module: parsing, several v1 values, rotation, tolerance, tampering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.webhooks.signature import (
    TOLERANCE_S,
    WebhookSignatureError,
    parse_secrets,
    sign,
    verify_signature,
)

SECRET = b"whsec_current_0123456789"
OLD = b"whsec_previous_9876543210"
BODY = b'{"id":"evt_01J0000000000000000000000A","type":"job.completed","data":{}}'
NOW = 1_800_000_000


def header(t: int | str, *sigs: str) -> str:
    """A signature header with ``t`` and the given v1 values."""
    return ",".join([f"t={t}", *(f"v1={s}" for s in sigs)])


def reason_of(
    hdr: str, body: bytes = BODY, secrets: list[bytes] | None = None, now: float = NOW
) -> str:
    """The rejection reason for ``hdr`` (fails the test if it verifies)."""
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(hdr, body, secrets or [SECRET], now)
    return info.value.reason


def test_valid_signature_verifies() -> None:
    """A header signed with the secret at now-10 s verifies with skew 10 s and secret index 0."""
    result = verify_signature(header(NOW - 10, sign(SECRET, NOW - 10, BODY)), BODY, [SECRET], NOW)
    assert (result.timestamp, result.secret_index, result.skew_s) == (NOW - 10, 0, 10)


def test_matches_the_simulator_and_the_documented_formula() -> None:
    """sign() is hex HMAC-SHA256(secret, "<t>.<body>"), 64 characters."""
    import hashlib
    import hmac

    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == sign(SECRET.decode(), NOW, BODY) == expected
    assert len(expected) == 64


def test_any_of_several_v1_values_verifies_in_any_order() -> None:
    """With 3 v1 values (2 wrong) and t last, the one right value is enough."""
    good = sign(SECRET, NOW, BODY)
    hdr = f"v1={'0' * 64},v1={good},v1={'f' * 64},t={NOW}"
    assert verify_signature(hdr, BODY, [SECRET], NOW).timestamp == NOW


def test_rotation_old_secret_still_verifies() -> None:
    """Secrets [new, old]: a body signed only with the old one verifies with secret index 1."""
    hdr = header(NOW, sign(OLD, NOW, BODY))
    assert verify_signature(hdr, BODY, [SECRET, OLD], NOW).secret_index == 1
    assert reason_of(hdr, secrets=[SECRET]) == "mismatch"


def test_rotation_both_signatures_against_new_secret() -> None:
    """Layers signing with both secrets verifies against the new secret alone (index 0)."""
    hdr = header(NOW, sign(OLD, NOW, BODY), sign(SECRET, NOW, BODY))
    assert verify_signature(hdr, BODY, [SECRET], NOW).secret_index == 0


def test_parse_secrets_splits_on_commas() -> None:
    """' a , ,b ' gives two secrets; an empty value gives none."""
    assert parse_secrets(" whsec_a , ,whsec_b ") == [b"whsec_a", b"whsec_b"]
    assert parse_secrets("") == []
    assert parse_secrets(" , ") == []


@pytest.mark.parametrize("offset", [TOLERANCE_S + 1, -(TOLERANCE_S + 1), 3600, -86400])
def test_stale_timestamps_rejected_both_directions(offset: int) -> None:
    """A genuine signature 301 s (or more) in the past or future is rejected as stale."""
    t = NOW - offset
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(header(t, sign(SECRET, t, BODY)), BODY, [SECRET], NOW)
    assert info.value.reason == "stale"
    assert ("old" if offset > 0 else "in the future") in info.value.message


@pytest.mark.parametrize("offset", [TOLERANCE_S, -TOLERANCE_S, 0])
def test_edge_of_tolerance_accepted(offset: int) -> None:
    """Exactly 300 s off either way is still accepted."""
    t = NOW - offset
    assert verify_signature(header(t, sign(SECRET, t, BODY)), BODY, [SECRET], NOW).skew_s == offset


def test_forgery_with_old_timestamp_says_mismatch_not_stale() -> None:
    """A wrong signature with a stale t is reported as a mismatch (stale is only for genuine)."""
    assert reason_of(header(NOW - 3600, "a" * 64)) == "mismatch"


def test_tampered_body_rejected() -> None:
    """Changing one byte of the body, or appending one, fails with mismatch."""
    hdr = header(NOW, sign(SECRET, NOW, BODY))
    assert reason_of(hdr, body=BODY.replace(b"completed", b"Completed")) == "mismatch"
    assert reason_of(hdr, body=BODY + b" ") == "mismatch"


def test_signature_over_other_timestamp_rejected() -> None:
    """A signature computed for t=NOW does not verify when the header says t=NOW+1."""
    assert reason_of(header(NOW + 1, sign(SECRET, NOW, BODY))) == "mismatch"


def test_upper_case_hex_accepted() -> None:
    """Hex digits are compared case-insensitively."""
    hdr = header(NOW, sign(SECRET, NOW, BODY).upper())
    assert verify_signature(hdr, BODY, [SECRET], NOW).timestamp == NOW


def test_unknown_schemes_ignored() -> None:
    """v0= and v2= parts are skipped; the v1 beside them decides."""
    hdr = f"t={NOW},v0=deadbeef,v2={'1' * 64},v1={sign(SECRET, NOW, BODY)}"
    assert verify_signature(hdr, BODY, [SECRET], NOW).timestamp == NOW


@pytest.mark.parametrize(
    ("hdr", "reason"),
    [
        ("", "missing"),
        ("   ", "missing"),
        ("garbage", "malformed"),
        (f"v1={'a' * 64}", "malformed"),  # no t
        (f"t=,v1={'a' * 64}", "malformed"),
        (f"t=abc,v1={'a' * 64}", "malformed"),
        (f"t=1.5,v1={'a' * 64}", "malformed"),
        (f"t=-5,v1={'a' * 64}", "malformed"),
        (f"t=+5,v1={'a' * 64}", "malformed"),
        (f"t=１２３,v1={'a' * 64}", "malformed"),  # full-width digits
        (f"t=1,t=2,v1={'a' * 64}", "malformed"),  # ambiguous
        (f"t={NOW}", "malformed"),  # no v1
        (f"t={NOW},v1=xyz", "malformed"),  # v1 not hex
        (f"t={NOW},v1={'a' * 63}", "malformed"),  # v1 too short
        (f"t={NOW},=x,v1={'a' * 64}", "malformed"),
        (f"t={NOW},v1={'a' * 64}", "mismatch"),
    ],
)
def test_garbage_headers_rejected(hdr: str, reason: str) -> None:
    """Missing, malformed or non-matching headers are rejected with the right reason."""
    assert reason_of(hdr) == reason


def test_no_secrets_is_a_programming_error() -> None:
    """Verifying with an empty secret list raises ValueError, not a signature error."""
    with pytest.raises(ValueError, match="secret"):
        verify_signature(header(NOW, "a" * 64), BODY, [], NOW)


@given(body=st.binary(max_size=4096), secret=st.binary(min_size=1, max_size=64))
def test_any_body_round_trips(body: bytes, secret: bytes) -> None:
    """Whatever the body and secret, sign() then verify_signature() succeeds."""
    result = verify_signature(header(NOW, sign(secret, NOW, body)), body, [secret], NOW)
    assert result.timestamp == NOW


@given(body=st.binary(min_size=1, max_size=2048), data=st.data())
def test_any_single_byte_change_fails(body: bytes, data: st.DataObject) -> None:
    """Changing any one byte of the body to any other value makes verification fail."""
    index = data.draw(st.integers(0, len(body) - 1))
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    tampered = body[:index] + bytes([new_byte]) + body[index + 1 :]
    with pytest.raises(WebhookSignatureError) as info:
        verify_signature(header(NOW, sign(SECRET, NOW, body)), tampered, [SECRET], NOW)
    assert info.value.reason == "mismatch"


@given(skew=st.integers(-10_000, 10_000))
def test_tolerance_is_symmetric(skew: int) -> None:
    """A genuine signature verifies exactly when |now - t| <= 300 s."""
    t = NOW - skew
    hdr = header(t, sign(SECRET, t, BODY))
    if abs(skew) <= TOLERANCE_S:
        assert verify_signature(hdr, BODY, [SECRET], NOW).skew_s == skew
    else:
        assert reason_of(hdr) == "stale"


@given(hdr=st.text(max_size=200))
def test_arbitrary_headers_never_crash(hdr: str) -> None:
    """Any header text either verifies or raises WebhookSignatureError, nothing else."""
    with pytest.raises(WebhookSignatureError):
        verify_signature(hdr, BODY, [SECRET], NOW)
