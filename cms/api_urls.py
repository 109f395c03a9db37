"""The /api/v1/ router: each app registers its viewsets here."""
from rest_framework.routers import DefaultRouter

from audit.api import AuditEventViewSet
from cards.api import routes as card_routes
from keys import api as key_api

router = DefaultRouter()
card_routes.register(router)
key_api.register(router)
router.register("audit-events", AuditEventViewSet, basename="auditevent")

urlpatterns = router.urls
