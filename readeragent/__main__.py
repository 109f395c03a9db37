"""`python -m readeragent enroll | run | status`: the station agent's command line."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from .identity import Identity, IdentityError, default_home, enroll
from .ledger import LEDGER_FILE, ReplayLedger


def _fingerprint(hex_key: str) -> str:
    return hashlib.sha256(bytes.fromhex(hex_key)).hexdigest()[:16]


def cmd_enroll(args) -> int:
    identity = enroll(cms_url=args.cms, station=args.station, token=args.token, home=args.home,
                      force=args.force)
    print(json.dumps({"station": identity.station, "status": "enrolled", "queue": identity.queue,
                      "home": str(args.home), "sign_public_key": identity.sign_public_hex,
                      "hpke_public_key": identity.hpke_public_hex,
                      "cms_signing_key_versions": sorted(identity.cms_signing_keys)}, indent=1))
    print("an admin must now approve the station (POST /api/v1/stations/<id>/approve/)", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    identity = Identity.load(args.home)
    info: dict = {
        "station": identity.station, "cms_url": identity.cms_url, "queue": identity.queue,
        "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(identity.enrolled_at))
        if identity.enrolled_at else None,
        "sign_public_key_sha256": _fingerprint(identity.sign_public_hex),
        "hpke_public_key_sha256": _fingerprint(identity.hpke_public_hex),
        "cms_signing_key_versions": sorted(identity.cms_signing_keys),
    }
    if (Path(args.home) / LEDGER_FILE).exists():
        ledger = ReplayLedger.in_home(args.home)
        info["jobs"] = ledger.counts()
        info["recent_jobs"] = ledger.recent(5)
        ledger.close()
    try:
        from .monitor import list_readers

        info["readers"] = list_readers()
    except Exception as exc:  # pcscd down is a status to show, not a crash
        info["readers"] = f"unavailable: {exc}"
    print(json.dumps(info, indent=1, default=str))
    return 0


def forbid_django() -> None:
    """The station process never loads the CMS's framework. Where Django happens to be installed next to
    the agent (a development checkout), kombu would still import `django.utils` for its optional JSON
    support; marking it absent makes that an ImportError kombu expects, and any other import of Django
    in the agent a loud one. No effect in a process that already imported Django (the CMS's tests)."""
    sys.modules.setdefault("django", None)  # type: ignore[arg-type]


def cmd_run(args) -> int:  # pragma: no cover - a long-running process
    forbid_django()
    from .monitor import ReaderError
    from .worker import run

    try:
        run(home=args.home, reader=args.reader, broker=args.broker, loglevel=args.loglevel,
            heartbeat_s=args.heartbeat)
    except ReaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m readeragent", description=__doc__)
    parser.add_argument("--home", type=Path, default=None,
                        help="agent home (default $CMS_AGENT_HOME or ~/.local/share/cms-agent)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", help="make this station's keys and register them with a one-time token")
    p.add_argument("--cms", required=True, help="CMS base URL, e.g. https://cms.example")
    p.add_argument("--station", required=True, help="station code")
    p.add_argument("--token", required=True, help="one-time enrolment token")
    p.add_argument("--force", action="store_true", help="replace an existing identity")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("run", help="run the card monitor and the job worker")
    p.add_argument("--reader", default=None, help="reader name (or a unique part of it); default: first")
    p.add_argument("--broker", default=None, help="broker URL (default $CMS_BROKER_URL)")
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="show the station identity, its jobs and the readers")
    p.set_defaults(func=cmd_status)
    # `--home` is accepted after the sub-command too (as jobproto.md writes it)
    for name in ("enroll", "run", "status"):
        sub.choices[name].add_argument("--home", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.home = Path(args.home) if args.home else default_home()
    try:
        return args.func(args)
    except IdentityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
