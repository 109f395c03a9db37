"""`manage.py demo setup | approve`: the CMS side of the bin/start demo (cms/demo.py); one JSON line out."""
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cms import demo


class Command(BaseCommand):
    help = "The bin/start demo's CMS side: 'setup' creates keys, profiles, API token and stations; " \
           "'approve' approves the enrolled demo stations."

    def add_arguments(self, parser):
        parser.add_argument("step", choices=["setup", "approve"])

    def handle(self, *args, **options):
        try:
            if options["step"] == "setup":
                result = demo.demo_setup(instance_dir=Path(settings.INSTANCE_DIR).resolve())
            else:
                result = demo.demo_approve()
        except Exception as exc:  # noqa: BLE001 - runstack shows the reason and goes on without the demo
            raise CommandError(f"demo {options['step']}: {type(exc).__name__}: {exc}") from None
        self.stdout.write("DEMO " + json.dumps(result))
