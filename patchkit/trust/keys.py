"""ECDSA P-256 signing keys: generation, loading, and key ids.

The key id is the hex sha256 of the public key's SubjectPublicKeyInfo PEM, the same value
model-signing records as the bundle's public-key hint, so both tools name a key alike.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit._internal.files import atomic_write_bytes, read_regular
from patchkit.errors import InvalidInputError, NotFoundError, UsageError

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey
MAX_KEY_BYTES = 64 * 1024


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    keyid: str


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keyid_of(key: PublicKey) -> str:
    return hashlib.sha256(public_pem(key)).hexdigest()


def _passphrase(passphrase_env: str | None) -> bytes | None:
    if not passphrase_env:
        return None
    value = os.environ.get(passphrase_env)
    if not value:
        raise UsageError(
            f"environment variable {passphrase_env} is empty or unset",
            f"export {passphrase_env}=<passphrase> before running, or drop --passphrase-env",
        )
    return value.encode("utf-8")


def generate_keypair(out_dir: Path, passphrase_env: str | None = None, *, overwrite: bool = False) -> KeyPair:
    """Write DIR/private.pem (0600, optionally encrypted) and DIR/public.pem."""
    out_dir = Path(out_dir)
    priv_path, pub_path = out_dir / "private.pem", out_dir / "public.pem"
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise UsageError(f"{out_dir} already holds a key pair", "choose another --out directory; keys are never overwritten")
    password = _passphrase(passphrase_env)
    key = ec.generate_private_key(ec.SECP256R1())
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(priv_path, pem, mode=0o600)
    atomic_write_bytes(pub_path, public_pem(key.public_key()), mode=0o644)
    return KeyPair(priv_path, pub_path, keyid_of(key.public_key()))


def load_private_key(path: Path, passphrase_env: str | None = None) -> PrivateKey:
    path = Path(path)
    try:
        data = read_regular(path, MAX_KEY_BYTES, what=f"private key {path}")
    except FileNotFoundError:
        raise NotFoundError(f"private key {path} does not exist", "create one with `patchkit keys generate --out DIR`") from None
    password = _passphrase(passphrase_env)
    try:
        key = serialization.load_pem_private_key(data, password)
    except UnsupportedAlgorithm:
        raise InvalidInputError(f"{path} is a key of an algorithm or curve patchkit cannot use",
                                "patchkit signs with ECDSA P-256; generate one with `patchkit keys generate`") from None
    except TypeError:
        if password is None:
            raise UsageError(f"private key {path} is encrypted", "pass --passphrase-env VAR naming the variable that holds its passphrase") from None
        raise InvalidInputError(f"private key {path} is not encrypted", "drop --passphrase-env") from None
    except ValueError:
        raise InvalidInputError(
            f"{path} is not a PEM private key, or the passphrase is wrong", "check the file and the passphrase"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInputError(f"{path} is not an ECDSA P-256 key", "generate one with `patchkit keys generate`")
    return key


def parse_public_key(data: bytes, source: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InvalidInputError(f"{source} is not a PEM public key", "pass the public.pem from `patchkit keys generate`") from None
    except UnsupportedAlgorithm:
        raise InvalidInputError(f"{source} is a key of an algorithm or curve patchkit cannot use",
                                "patchkit signs with ECDSA P-256 keys") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInputError(f"{source} is not an ECDSA P-256 public key", "patchkit signs with P-256 keys")
    return key


def load_public_key(path: Path) -> PublicKey:
    path = Path(path)
    try:
        data = read_regular(path, MAX_KEY_BYTES, what=f"public key {path}")
    except FileNotFoundError:
        raise NotFoundError(f"public key {path} does not exist", "check the path") from None
    return parse_public_key(data, str(path))
