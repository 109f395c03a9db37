"""`manage.py signing_key rotate|roll|status`: the CMS job-signing key (Vault Transit) and its roll to
stations (cards/services/keyroll.py). Run at the CMS host by an operator: audited as the system."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from keys.errors import KeystoreError


class Command(BaseCommand):
    help = ("rotate: a new job-signing key version, announced to every approved station (signed with the "
            "version each station trusts); roll: send the latest version again to stations that have not "
            "pinned it (e.g. offline during the rotation, or approved since), --retire-below N tells those "
            "that use the latest to forget older versions; status: each station's version and its rolls.")

    def add_arguments(self, parser):
        parser.add_argument("step", choices=["rotate", "roll", "status"])
        parser.add_argument("--station", action="append", default=None, help="only this station (repeatable)")
        parser.add_argument("--retire-below", type=int, default=None)
        parser.add_argument("--reason", default="", help="rotate: why (kept in the audit event)")

    def handle(self, *args, **options):
        from cards.models import Station, StationKeyRoll
        from cards.services import keyroll
        from keys import signing

        try:
            if options["step"] == "rotate":
                out = keyroll.signing_key_rotate(reason=options["reason"][:200])
            elif options["step"] == "roll":
                out = keyroll.key_rolls_send(retire_below=options["retire_below"],
                                             stations=options["station"])
            else:
                stations = Station.objects.all()
                if options["station"]:
                    stations = stations.filter(code__in=options["station"])
                out = {"latest_version": int(signing.ensure_signing_key()["latest_version"]),
                       "stations": [{"station": s.code, "status": s.status,
                                     "jobs_signed_with": s.cms_signing_key_version,
                                     "rolls": [{"roll_id": str(r.id), "new_version": r.new_version,
                                                "state": r.state, "reason": r.reason}
                                               for r in StationKeyRoll.objects.filter(station=s)]}
                                    for s in stations]}
        except (KeystoreError, ValueError) as exc:
            raise CommandError(f"signing_key {options['step']}: {exc}") from None
        self.stdout.write(json.dumps(out, indent=1))
