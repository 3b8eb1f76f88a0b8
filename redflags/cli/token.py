"""``redflags token``: print a signed CDS client JWT, to call the service with curl.

It signs what ``redflags.service.auth.client_jwt`` checks: header ``alg`` (ES384 for an EC P-384
key, RS384 for RSA), ``typ`` JWT and ``kid``; claims ``iss``, ``sub``, ``aud`` (the exact URL
called), ``iat``, ``exp`` and a fresh ``jti`` (a token is accepted once). The default ``kid`` is
the key's RFC 7638 thumbprint, the ``kid`` ``examples/service/clients.json`` lists, so a key
pair made for a clients file needs no agreed name. The token goes to stdout only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import click
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from redflags.service.auth.callers import public_url_problem
from redflags.service.auth.client_jwt import MAX_LIFETIME_S


class TokenRefused(click.ClickException):
    """A key or option ``token`` cannot sign with: one line, exit 2 like a usage error."""

    exit_code = 2


def load_key(path: Path) -> tuple[Any, str]:
    """The private key in PATH (PEM, unencrypted) and the algorithm CDS Hooks allows for it."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TokenRefused(f"--key {path}: cannot read ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise TokenRefused(f"--key {path}: not an unencrypted PEM private key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key, "ES384"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key, "RS384"
    raise TokenRefused(f"--key {path}: CDS Hooks keys are EC P-384 (ES384) or RSA >= 2048 bits (RS384)")


def thumbprint(key: Any, alg: str) -> str:
    """RFC 7638 SHA-256 thumbprint of the public key: the default ``kid``."""
    algorithm = ECAlgorithm(ECAlgorithm.SHA384) if alg == "ES384" else RSAAlgorithm(RSAAlgorithm.SHA384)
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def mint(key: Any, alg: str, kid: str, iss: str, aud: str, lifetime_s: int, now: float) -> str:
    issued = int(now)
    claims = {
        "iss": iss,
        "sub": iss,
        "aud": aud,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


@click.command("token")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The client's private key (PEM: EC P-384 or RSA); its public half is in the clients file.",
)
@click.option("--iss", required=True, help="The client's issuer, as in the clients file.")
@click.option(
    "--aud",
    required=True,
    metavar="URL",
    help="The exact URL to call: serve's --public-url + path, e.g. "
    "http://127.0.0.1:8080/cds-services/redflags-patient-view.",
)
@click.option("--kid", help="Key id in the token header (default: the key's RFC 7638 thumbprint).")
@click.option(
    "--lifetime",
    default=MAX_LIFETIME_S,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds the token is valid (serve refuses more than its --max-token-lifetime).",
)
def token_command(key_path: Path, iss: str, aud: str, kid: str | None, lifetime: int) -> None:
    """Print a signed CDS client JWT for one call (Authorization: Bearer <token>)."""
    if not iss.strip():
        raise TokenRefused("--iss is empty")
    if problem := public_url_problem(aud):
        raise TokenRefused(f"--aud {aud!r}: {problem}")
    key, alg = load_key(key_path)
    click.echo(mint(key, alg, kid or thumbprint(key, alg), iss, aud, lifetime, time.time()))
