"""Card-world models, split by sub-domain."""
from .cards import Application, Card, CardFile  # noqa: F401
from .orders import Job, Order  # noqa: F401
from .profiles import CardProfile  # noqa: F401
from .stations import Station, StationKeyRoll  # noqa: F401
from .tenants import Tenant  # noqa: F401
from .webhooks import WebhookDelivery, WebhookEndpoint  # noqa: F401
