"""`manage.py audit_verify`: exit 0 when the whole chain matches, 1 naming the first bad event."""
from django.core.management.base import BaseCommand, CommandError

from audit.errors import AuditUnavailable
from audit.verify import audit_chain_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; names the first event that does not match."

    def handle(self, *args, **options):
        try:
            result = audit_chain_verify()
        except AuditUnavailable as exc:
            raise CommandError(str(exc), returncode=2)
        if not result.ok:
            raise CommandError(result.describe(), returncode=1)
        self.stdout.write(result.describe())
