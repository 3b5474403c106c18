"""Client-authentication settings: flags, variables, files, and the start-up checks that refuse unusable ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy import cli
from proxy.cli import _parser, build_config
from proxy.config import ConfigError, from_env

SECRET_A = "a" * 32 + "-hush-A"
SECRET_B = "b" * 32 + "-hush-B"


def public_pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "secrets").write_text(f"# rotated monthly\n{SECRET_A}\n\n{SECRET_B}\n")
    (tmp_path / "tokens").write_text("tok-hush-1\ntok-hush-2\n")
    (tmp_path / "rsa.pem").write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    (tmp_path / "ec.pem").write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "empty").write_text("# nothing yet\n\n")
    return tmp_path


def test_secrets_and_tokens_come_from_the_environment() -> None:
    config = from_env({"PROXY_JWT_SECRETS": f"{SECRET_A}, {SECRET_B}", "PROXY_CLIENT_TOKENS": "t1,t2"})
    assert config.jwt_secrets == (SECRET_A, SECRET_B)
    assert config.client_tokens == ("t1", "t2")
    assert config.client_secrets() == ("t1", "t2", SECRET_A, SECRET_B)
    assert config.jwt_leeway_s == 30.0


def test_secrets_tokens_and_keys_come_from_files_named_by_flags(files: Path) -> None:
    args = _parser().parse_args(
        [
            "--jwt-secrets-file",
            str(files / "secrets"),
            "--client-tokens-file",
            str(files / "tokens"),
            "--jwt-public-key-file",
            str(files / "ec.pem"),
            "--jwt-audience",
            "voice-proxy",
            "--jwt-issuer",
            "https://app.example",
            "--jwt-leeway-s",
            "5",
        ]
    )
    config = build_config(args)
    assert config.jwt_secrets == (SECRET_A, SECRET_B)
    assert config.client_tokens == ("tok-hush-1", "tok-hush-2")
    assert config.jwt_public_key is not None
    assert config.jwt_public_key.algorithm == "ES256"
    assert (config.jwt_audience, config.jwt_issuer, config.jwt_leeway_s) == ("voice-proxy", "https://app.example", 5)


def test_files_and_values_are_read_from_the_environment_too(files: Path) -> None:
    config = from_env(
        {
            "PROXY_JWT_SECRETS_FILE": str(files / "secrets"),
            "PROXY_CLIENT_TOKENS_FILE": str(files / "tokens"),
            "PROXY_JWT_PUBLIC_KEY_FILE": str(files / "rsa.pem"),
            "PROXY_JWT_AUDIENCE": "voice-proxy",
            "PROXY_JWT_ISSUER": "https://app.example",
            "PROXY_JWT_LEEWAY_S": "0",
        }
    )
    assert config.jwt_secrets == (SECRET_A, SECRET_B)
    assert config.client_tokens == ("tok-hush-1", "tok-hush-2")
    assert config.jwt_public_key is not None
    assert config.jwt_public_key.algorithm == "RS256"
    assert (config.jwt_audience, config.jwt_issuer, config.jwt_leeway_s) == ("voice-proxy", "https://app.example", 0)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PROXY_JWT_SECRETS_FILE": "{dir}/missing"}, "cannot read the JWT secrets file"),
        ({"PROXY_CLIENT_TOKENS_FILE": "{dir}/missing"}, "cannot read the client tokens file"),
        ({"PROXY_JWT_SECRETS_FILE": "{dir}/empty"}, "holds no entries"),
        ({"PROXY_JWT_SECRETS": "short-hush"}, "shorter than 32 bytes"),
        ({"PROXY_JWT_SECRETS": f"{SECRET_A},,{SECRET_B}"}, "empty entry"),
        ({"PROXY_JWT_SECRETS": f"{SECRET_A}", "PROXY_JWT_SECRETS_FILE": "{dir}/secrets"}, "not both"),
        ({"PROXY_CLIENT_TOKENS": "t1", "PROXY_CLIENT_TOKENS_FILE": "{dir}/tokens"}, "not both"),
        ({"PROXY_JWT_PUBLIC_KEY_FILE": "{dir}/secrets"}, "is not a PEM public key"),
        ({"PROXY_JWT_PUBLIC_KEY_FILE": "{dir}/missing"}, "cannot read the JWT public key file"),
        ({"PROXY_JWT_PUBLIC_KEY_FILE": "{dir}/small.pem"}, "shorter than 2048 bits"),
        ({"PROXY_JWT_PUBLIC_KEY_FILE": "{dir}/p384.pem"}, "P-256"),
        ({"PROXY_JWT_SECRETS_FILE": "{dir}/rsa.pem"}, "looks like a public or private key"),
        ({"PROXY_JWT_AUDIENCE": "voice-proxy"}, "no JWT secret or public key"),
        ({"PROXY_JWT_SECRETS": SECRET_A, "PROXY_JWT_LEEWAY_S": "soon"}, "PROXY_JWT_LEEWAY_S"),
        ({"PROXY_JWT_SECRETS": SECRET_A, "PROXY_JWT_LEEWAY_S": "-1"}, "between 0 and 300"),
        ({"PROXY_JWT_SECRETS": SECRET_A, "PROXY_JWT_LEEWAY_S": "inf"}, "between 0 and 300"),
    ],
)
def test_unusable_settings_are_one_clear_sentence_without_the_secret(
    files: Path, env: dict[str, str], words: str
) -> None:
    (files / "small.pem").write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    (files / "p384.pem").write_bytes(public_pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ConfigError) as info:
        from_env({name: value.format(dir=files) for name, value in env.items()})
    message = str(info.value)
    assert words in message
    assert "hush" not in message
    assert "\n" not in message


def test_a_bad_secrets_file_exits_2_with_one_line(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (files / "short").write_text("short-hush\n")
    monkeypatch.delenv("PROXY_JWT_SECRETS", raising=False)
    assert cli.main(["--jwt-secrets-file", str(files / "short")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "shorter than 32 bytes" in err
    assert "hush" not in err


def test_secrets_never_appear_in_the_config_repr(files: Path) -> None:
    config = from_env(
        {
            "PROXY_JWT_SECRETS_FILE": str(files / "secrets"),
            "PROXY_CLIENT_TOKENS": "tok-hush-3",
            "PROXY_JWT_PUBLIC_KEY_FILE": str(files / "ec.pem"),
        }
    )
    assert "hush" not in repr(config)
    assert "VerificationKey(ES256)" in repr(config)


def test_secrets_are_never_accepted_as_flags() -> None:
    """Flags take file paths: a secret on a command line is visible to every user of the machine."""
    options = {option for action in _parser()._actions for option in action.option_strings}
    assert {"--jwt-secrets-file", "--client-tokens-file", "--jwt-public-key-file"} <= options
    assert not {"--jwt-secret", "--jwt-secrets", "--client-token", "--client-tokens"} & options


def test_the_auth_module_never_imports_trio() -> None:
    source = Path(__file__).parents[2] / "proxy" / "auth.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "jwt" in imported
    assert not {"trio", "trio_websocket"} & imported
