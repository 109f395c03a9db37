"""The station's identity: its key pairs, made on the station, and the CMS signing key from enrolment.

The private halves (X25519 for HPKE, Ed25519 for signing) never leave the station: they live in one
JSON file, mode 0600, in a 0700 agent home. Enrolment sends only the public halves, with the
one-time token, to `POST {cms}/api/v1/stations/enroll/` (see /work/prompts/jobproto.md).
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from .protocol import public_bytes_ed25519, public_bytes_x25519

IDENTITY_FILE = "identity.json"
ENROLL_PATH = "/api/v1/stations/enroll/"


class IdentityError(Exception):
    """Missing, unreadable or unsafe identity, or a refused enrolment. Never carries key bytes."""


def default_home() -> Path:
    return Path(os.environ.get("CMS_AGENT_HOME") or Path.home() / ".local" / "share" / "cms-agent")


def _raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass
class Identity:
    station: str
    cms_url: str
    hpke_private_key: X25519PrivateKey = field(repr=False)
    sign_private_key: Ed25519PrivateKey = field(repr=False)
    # CMS job-signing public keys (hex, raw Ed25519) by Vault Transit key version.
    cms_signing_keys: dict[int, str] = field(default_factory=dict)
    enrolled_at: float | None = None
    # ids of the CMS key rolls received (readeragent.keyroll), newest last: a copy is a replay
    key_rolls_seen: list[str] = field(default_factory=list)

    KEY_ROLLS_KEPT = 256

    @classmethod
    def generate(cls, station: str, cms_url: str) -> Identity:
        return cls(station, cms_url, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @property
    def queue(self) -> str:
        return f"station.{self.station}"

    @property
    def hpke_public_hex(self) -> str:
        return public_bytes_x25519(self.hpke_private_key.public_key()).hex()

    @property
    def sign_public_hex(self) -> str:
        return public_bytes_ed25519(self.sign_private_key.public_key()).hex()

    def cms_public_key(self, version: int) -> Ed25519PublicKey | None:
        value = self.cms_signing_keys.get(version)
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(value)) if value else None

    # -- file ---------------------------------------------------------------------------------
    def save(self, home: Path) -> Path:
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(home, 0o700)
        path = home / IDENTITY_FILE
        data = json.dumps({
            "v": 1, "station": self.station, "cms_url": self.cms_url, "enrolled_at": self.enrolled_at,
            "hpke_private_key": _raw_private(self.hpke_private_key).hex(),
            "sign_private_key": _raw_private(self.sign_private_key).hex(),
            "cms_signing_keys": {str(k): v for k, v in self.cms_signing_keys.items()},
            "key_rolls_seen": self.key_rolls_seen,
        }, indent=1, sort_keys=True)
        tmp = path.with_name(f".{IDENTITY_FILE}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        directory = os.open(home, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
        return path

    def saved_with(self, home: Path, **changes) -> Path:
        """Write the identity with `changes` applied (atomically: a temporary file renamed over the old
        one), and only then apply them here; an OSError leaves both file and memory as they were."""
        from dataclasses import replace

        path = replace(self, **changes).save(home)
        for name, value in changes.items():
            setattr(self, name, value)
        return path

    @classmethod
    def load(cls, home: Path) -> Identity:
        path = Path(home) / IDENTITY_FILE
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise IdentityError(f"no station identity in {home}: run `python -m readeragent enroll` first") \
                from None
        if stat.S_IMODE(mode) & 0o077:
            raise IdentityError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                                "it holds the station's private keys: chmod 600 it")
        try:
            raw = json.loads(path.read_text())
            return cls(
                raw["station"], raw["cms_url"],
                X25519PrivateKey.from_private_bytes(bytes.fromhex(raw["hpke_private_key"])),
                Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw["sign_private_key"])),
                {int(k): v for k, v in raw.get("cms_signing_keys", {}).items()},
                raw.get("enrolled_at"), [str(r) for r in raw.get("key_rolls_seen", [])])
        except (ValueError, KeyError, TypeError):
            raise IdentityError(f"{path} is not a valid station identity") from None


def _post_json(url: str, body: dict, timeout: float) -> tuple[int, dict]:
    if not url.startswith(("http://", "https://")):
        raise IdentityError(f"the CMS URL must be http(s), not {url.split(':')[0]!r}")
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - checked above
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}")
        except ValueError:
            detail = {}
        return exc.code, detail
    except (urllib.error.URLError, OSError) as exc:
        raise IdentityError(f"cannot reach the CMS at {url}: {exc}") from None


def enroll(*, cms_url: str, station: str, token: str, home: Path, force: bool = False,
           timeout: float = 10.0) -> Identity:
    """Make the key pairs here, register the public halves with the one-time token, save the identity.

    An existing identity is kept unless `force`: replacing it would orphan the keys the CMS knows.
    """
    home = Path(home)
    if (home / IDENTITY_FILE).exists() and not force:
        raise IdentityError(f"{home / IDENTITY_FILE} exists; this station is already enrolled "
                            "(use --force to replace its keys)")
    identity = Identity.generate(station, cms_url.rstrip("/"))
    status, answer = _post_json(identity.cms_url + ENROLL_PATH, {
        "code": station, "token": token, "hpke_public_key": identity.hpke_public_hex,
        "sign_public_key": identity.sign_public_hex}, timeout)
    if status != 200:
        raise IdentityError(f"enrolment refused by the CMS (HTTP {status}): {json.dumps(answer)[:500]}")
    try:
        if answer["station"] != station:
            raise ValueError
        version = int(answer["cms_signing_key_version"])
        public_hex = str(answer["cms_signing_public_key"]).lower()
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
    except (KeyError, TypeError, ValueError):
        raise IdentityError("the CMS answer to enrolment is not the expected one: "
                            f"{json.dumps(answer)[:500]}") from None
    identity.cms_signing_keys = {version: public_hex}
    identity.enrolled_at = time.time()
    identity.save(home)
    return identity
