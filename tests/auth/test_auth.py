"""Every admission rule of proxy/auth.py, without sockets: Origin, static tokens, signed tokens, where they travel."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from proxy.auth import (
    MAX_TOKEN_BYTES,
    Admitted,
    ClientGate,
    ClientRequest,
    Refused,
    VerificationKey,
    load_public_key,
)
from tests.fuzzing import fuzz_settings

NOW = 1_800_000_000.0
SECRET = "s" * 32 + "-first-secret"
OLD_SECRET = "o" * 32 + "-previous-secret"
ORIGIN = "https://app.example"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


def pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


RSA_KEY = load_public_key(pem(_RSA))
EC_KEY = load_public_key(pem(_EC))


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "user-17", "exp": NOW + 60, **extra}


def hs256(payload: dict[str, Any], secret: str | bytes = SECRET, **header: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=header or None)


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A token HMAC-signed by hand (PyJWT refuses to sign with a PEM key, which is the point of the attack)."""

    def segment(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = segment(header) + b"." + segment(payload)
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def gate(**fields: Any) -> ClientGate:
    base = ClientGate(secrets=(SECRET.encode(),))
    return replace(base, **fields)


def request(
    token: str | None = None,
    *,
    origins: tuple[str, ...] = (),
    route: str = "openai",
    subprotocols: tuple[str, ...] = (),
    query: str | None = None,
) -> ClientRequest:
    headers = tuple((b"origin", origin.encode()) for origin in origins)
    if query is None:
        query = f"token={token}" if token is not None else ""
    return ClientRequest(headers, query, route, subprotocols)


def refusal(verdict: Admitted | Refused) -> str:
    assert isinstance(verdict, Refused), verdict
    return verdict.reason


# -- Origin --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origins",
    [(ORIGIN, "https://evil.example"), ("https://evil.example", ORIGIN), (ORIGIN, ORIGIN)],
)
@pytest.mark.parametrize("allow_list", [(ORIGIN,), ()])
def test_two_origin_headers_are_refused_with_403(origins: tuple[str, ...], allow_list: tuple[str, ...]) -> None:
    verdict = ClientGate(allowed_origins=allow_list).check(request(origins=origins), NOW)
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason, verdict.metric_reason) == (
        403,
        "origin_duplicate",
        "forbidden_origin_duplicate",
    )


@pytest.mark.parametrize(("origins", "admitted"), [((ORIGIN,), True), (("https://evil.example",), False), ((), False)])
def test_the_origin_must_be_on_the_allow_list(origins: tuple[str, ...], admitted: bool) -> None:
    verdict = ClientGate(allowed_origins=(ORIGIN,)).check(request(origins=origins), NOW)
    assert isinstance(verdict, Admitted) is admitted
    if not admitted:
        assert isinstance(verdict, Refused)
        assert (verdict.status, verdict.reason) == (403, "origin")


def test_without_any_rule_everyone_is_admitted_and_subprotocols_pass_unchanged() -> None:
    verdict = ClientGate().check(request(subprotocols=("token", "anything")), NOW)
    assert verdict == Admitted(("token", "anything"), None, "anonymous")


# -- static tokens -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("token=s3cret", None),
        ("token=other", None),
        ("", "missing"),
        ("token=", "missing"),
        ("token=wrong", "bad_token"),
        ("token=s3cret&token=s3cret", "duplicate"),
        ("token=s3cret&token=wrong", "duplicate"),
        ("token=%C3%A9", "bad_token"),
    ],
)
def test_static_tokens_need_exactly_one_matching_token(query: str, reason: str | None) -> None:
    verdict = ClientGate(tokens=(b"s3cret", b"other")).check(request(query=query), NOW)
    if reason is None:
        assert isinstance(verdict, Admitted)
        assert verdict.principal.startswith("token#")
    else:
        assert isinstance(verdict, Refused)
        assert (verdict.status, verdict.reason, verdict.message) == (401, reason, "Unauthorized")


def test_static_tokens_and_signed_tokens_both_admit() -> None:
    both = gate(tokens=(b"static-token",))
    assert isinstance(both.check(request("static-token"), NOW), Admitted)
    assert isinstance(both.check(request(hs256(claims())), NOW), Admitted)
    assert refusal(both.check(request("static-tokeN"), NOW)) == "malformed"


# -- signed tokens: HS256 ------------------------------------------------------------------------------------------


def test_a_valid_hs256_token_admits_and_the_principal_is_the_truncated_subject() -> None:
    verdict = gate().check(request(hs256(claims(sub="u" * 100))), NOW)
    assert isinstance(verdict, Admitted)
    assert verdict.principal == "jwt:'" + "u" * 32 + "'..."
    verdict = gate().check(request(hs256(claims(sub="line\nbreak"))), NOW)
    assert isinstance(verdict, Admitted)
    assert "\n" not in verdict.principal


def test_rotation_any_configured_secret_verifies() -> None:
    rotating = gate(secrets=(SECRET.encode(), OLD_SECRET.encode()))
    assert isinstance(rotating.check(request(hs256(claims(), OLD_SECRET)), NOW), Admitted)
    assert isinstance(rotating.check(request(hs256(claims(), SECRET)), NOW), Admitted)
    assert refusal(gate().check(request(hs256(claims(), OLD_SECRET)), NOW)) == "bad_signature"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert refusal(gate().check(request(hs256(claims(), "x" * 40)), NOW)) == "bad_signature"


@pytest.mark.parametrize(
    ("exp", "reason"),
    [(NOW + 1, None), (NOW - 29, None), (NOW - 30, "expired"), (NOW - 3600, "expired")],
)
def test_expiry_is_checked_with_the_leeway(exp: float, reason: str | None) -> None:
    verdict = gate(leeway_s=30.0).check(request(hs256(claims(exp=exp))), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


@pytest.mark.parametrize(
    ("nbf", "reason"), [(NOW - 10, None), (NOW + 29, None), (NOW + 31, "not_yet_valid"), (NOW + 600, "not_yet_valid")]
)
def test_not_before_in_the_future_is_allowed_within_the_leeway_only(nbf: float, reason: str | None) -> None:
    verdict = gate(leeway_s=30.0).check(request(hs256(claims(nbf=nbf, exp=NOW + 3600))), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


def test_a_token_without_exp_is_refused() -> None:
    assert refusal(gate().check(request(hs256({"sub": "user-17"})), NOW)) == "missing_claim"


@pytest.mark.parametrize("exp", ["tomorrow", True, None, [1], float("nan")])
def test_a_token_with_a_malformed_exp_is_refused(exp: object) -> None:
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, {"exp": exp}, SECRET.encode())
    assert isinstance(gate().check(request(token), NOW), Refused)


@pytest.mark.parametrize(
    ("audience", "token_audience", "reason"),
    [
        ("voice-proxy", "voice-proxy", None),
        ("voice-proxy", ["other", "voice-proxy"], None),
        ("voice-proxy", "other", "audience"),
        ("voice-proxy", None, "missing_claim"),
        (None, "voice-proxy", "audience"),
        (None, None, None),
    ],
)
def test_the_audience_is_checked(audience: str | None, token_audience: object, reason: str | None) -> None:
    payload = claims() if token_audience is None else claims(aud=token_audience)
    verdict = gate(audience=audience).check(request(hs256(payload)), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


@pytest.mark.parametrize(
    ("token_issuer", "reason"), [("https://app.example", None), ("https://evil.example", "issuer")]
)
def test_the_issuer_is_checked_when_configured(token_issuer: str, reason: str | None) -> None:
    verdict = gate(issuer="https://app.example").check(request(hs256(claims(iss=token_issuer))), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


# -- algorithms ----------------------------------------------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    assert refusal(gate().check(request(token), NOW)) == "algorithm"
    assert refusal(gate(public_key=RSA_KEY).check(request(token), NOW)) == "algorithm"


def test_an_rs256_token_is_verified_with_the_public_key() -> None:
    rs = ClientGate(public_key=RSA_KEY)
    assert isinstance(rs.check(request(jwt.encode(claims(), _RSA, algorithm="RS256")), NOW), Admitted)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refusal(rs.check(request(jwt.encode(claims(), other, algorithm="RS256")), NOW)) == "bad_signature"


def test_an_es256_token_is_verified_with_the_public_key() -> None:
    es = ClientGate(public_key=EC_KEY)
    assert isinstance(es.check(request(jwt.encode(claims(), _EC, algorithm="ES256")), NOW), Admitted)
    other = ec.generate_private_key(ec.SECP256R1())
    assert refusal(es.check(request(jwt.encode(claims(), other, algorithm="ES256")), NOW)) == "bad_signature"


@pytest.mark.parametrize("secrets", [(), (SECRET.encode(),)])
def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused(secrets: tuple[bytes, ...]) -> None:
    """The classic attack: the public key is public, so an HS256 token "signed" with it must never verify."""
    confused = ClientGate(secrets=secrets, public_key=RSA_KEY)
    token = hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), pem(_RSA))
    # Without shared secrets HS256 is not an algorithm this gate knows; with them, the public key is not one of them.
    assert refusal(confused.check(request(token), NOW)) == ("bad_signature" if secrets else "algorithm")
    # The token is well formed and its HMAC over the public key's bytes is right: only pinning refuses it.
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(pem(_RSA), signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=") == expected


@pytest.mark.parametrize(
    ("key", "signer", "algorithm"),
    [(RSA_KEY, _EC, "ES256"), (EC_KEY, _RSA, "RS256"), (RSA_KEY, _RSA, "RS512"), (RSA_KEY, _RSA, "PS256")],
)
def test_the_algorithm_is_pinned_by_the_key_type(
    key: VerificationKey, signer: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str
) -> None:
    token = jwt.encode(claims(), signer, algorithm=algorithm)
    assert refusal(ClientGate(public_key=key).check(request(token), NOW)) == "algorithm"


def test_hs256_is_refused_when_only_a_public_key_is_configured() -> None:
    assert refusal(ClientGate(public_key=EC_KEY).check(request(hs256(claims())), NOW)) == "algorithm"


# -- claims that narrow a token ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origins", "reason"),
    [((ORIGIN,), None), (("https://evil.example",), "origin_claim"), ((), "origin_claim")],
)
def test_an_origin_claim_must_equal_the_request_origin(origins: tuple[str, ...], reason: str | None) -> None:
    verdict = gate().check(request(hs256(claims(origin=ORIGIN)), origins=origins), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


@pytest.mark.parametrize(("route", "reason"), [("openai", None), ("deepgram", "route_claim")])
def test_a_route_claim_must_equal_the_route(route: str, reason: str | None) -> None:
    verdict = gate().check(request(hs256(claims(route="openai")), route=route), NOW)
    assert (verdict.reason if isinstance(verdict, Refused) else None) == reason


def test_an_oversized_token_is_refused_before_decoding() -> None:
    huge = hs256(claims(pad="p" * MAX_TOKEN_BYTES))
    assert refusal(gate().check(request(huge), NOW)) == "too_long"
    deep_header = "W" * 600 + ".e30.sig"  # a header this long is refused before it is parsed
    assert refusal(gate().check(request(deep_header), NOW)) == "malformed"


# -- where the token travels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["token", "bearer", "Token"])
def test_a_token_as_a_subprotocol_pair_admits_and_only_the_scheme_word_is_echoed(scheme: str) -> None:
    token = hs256(claims())
    verdict = gate().check(request(subprotocols=("chat.v1", scheme, token)), NOW)
    assert isinstance(verdict, Admitted)
    assert verdict.echo == scheme
    assert verdict.subprotocols == ("chat.v1", scheme)
    assert token not in verdict.subprotocols


def test_a_token_in_the_query_admits_and_leaves_subprotocols_alone() -> None:
    verdict = gate().check(request(hs256(claims()), subprotocols=("chat.v1",)), NOW)
    assert verdict == Admitted(("chat.v1",), None, "jwt:'user-17'")


def test_a_static_token_may_also_travel_as_a_subprotocol_pair() -> None:
    verdict = ClientGate(tokens=(b"s3cret",)).check(request(subprotocols=("token", "s3cret")), NOW)
    assert verdict == Admitted(("token",), "token", "token#1")


@pytest.mark.parametrize(
    ("query", "subprotocols", "reason"),
    [
        ("token=A&token=A", (), "duplicate"),
        ("token=A", ("token", "A"), "duplicate"),
        ("", ("token", "A", "bearer", "A"), "duplicate"),
        ("", ("token",), "malformed"),
        ("", ("chat.v1",), "missing"),
    ],
)
def test_more_or_less_than_one_credential_is_refused(query: str, subprotocols: tuple[str, ...], reason: str) -> None:
    token = hs256(claims())
    verdict = gate().check(
        request(query=query.replace("A", token), subprotocols=tuple(s.replace("A", token) for s in subprotocols)),
        NOW,
    )
    assert refusal(verdict) == reason


def test_no_refusal_carries_the_token() -> None:
    token = hs256(claims(exp=NOW - 3600))
    verdict = gate().check(request(token), NOW)
    assert isinstance(verdict, Refused)
    assert token not in repr(verdict)
    assert SECRET not in repr(gate())


# -- hostile input -------------------------------------------------------------------------------------------------

_VALID = hs256(claims(origin=ORIGIN, route="openai"))


def _mutate(token: str, position: int, replacement: str) -> str:
    position %= len(token) + 1
    return token[:position] + replacement + token[position + 1 :]


_tokens = st.one_of(
    st.sampled_from([_VALID, hs256(claims()), "static"]),
    st.text(max_size=200),
    st.builds(_mutate, st.just(_VALID), st.integers(0, 10_000), st.text(max_size=3)),
    st.builds(
        lambda header, payload: hand_signed(header, payload, SECRET.encode()),
        st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit"]), st.sampled_from(["HS256", "none", 1, None])),
        st.dictionaries(
            st.sampled_from(["exp", "nbf", "aud", "iss", "sub", "origin", "route"]),
            st.one_of(st.integers(), st.floats(), st.text(max_size=10), st.none(), st.lists(st.integers(), max_size=2)),
        ),
    ),
)
_headers = st.lists(
    st.tuples(
        st.sampled_from([b"origin", b"host", b"sec-websocket-protocol"]),
        st.one_of(st.just(ORIGIN.encode()), st.binary(max_size=40)),
    ),
    max_size=3,
)


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    token=_tokens,
    headers=_headers,
    subprotocols=st.lists(st.one_of(st.sampled_from(["token", "bearer", "chat"]), st.text(max_size=20)), max_size=4),
    in_query=st.booleans(),
    query_noise=st.text(max_size=30),
    allow_list=st.sampled_from([(), (ORIGIN,)]),
)
def test_any_token_and_headers_give_a_verdict_never_an_exception(
    token: str,
    headers: list[tuple[bytes, bytes]],
    subprotocols: list[str],
    in_query: bool,
    query_noise: str,
    allow_list: tuple[str, ...],
) -> None:
    offered = tuple(subprotocols) if in_query else ("token", token, *subprotocols)
    query = f"token={token}&{query_noise}" if in_query else query_noise
    checker = gate(tokens=(b"static",), public_key=EC_KEY, allowed_origins=allow_list)
    verdict = checker.check(ClientRequest(tuple(headers), query, "openai", offered), NOW)
    assert isinstance(verdict, Admitted | Refused)
    if isinstance(verdict, Refused):
        assert (verdict.status, verdict.message) in ((401, "Unauthorized"), (403, "Origin not allowed"))
        assert verdict.reason.isidentifier()
    else:
        # Exactly the credential was taken out of the offered subprotocols, and only when it travelled there.
        assert len(verdict.subprotocols) == len(offered) - (0 if in_query else 1)
