"""URL map of the web UI, mounted at / (namespace "web")."""
from django.urls import path

from cms.web.views import alerts, audit, auth, cards, dashboard, keys

app_name = "web"

urlpatterns = [
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("reauth/", auth.reauth, name="reauth"),
    path("tenant/switch/", auth.switch_tenant, name="switch_tenant"),
    path("", dashboard.dashboard, name="dashboard"),
    path("tenants/", cards.tenants, name="tenants"),
    path("profiles/", cards.profiles, name="profiles"),
    path("profiles/<int:pk>/", cards.profile_detail, name="profile"),
    path("profiles/<int:pk>/plan/", cards.profile_plan, name="profile_plan"),
    path("stations/", cards.station_index, name="stations"),
    path("stations/<int:pk>/approve/", cards.station_approve, name="station_approve"),
    path("stations/<int:pk>/revoke/", cards.station_revoke, name="station_revoke"),
    path("orders/", cards.orders, name="orders"),
    path("orders/<int:pk>/", cards.order_detail, name="order"),
    path("jobs/<uuid:pk>/", cards.job_detail, name="job"),
    path("cards/", cards.cards, name="cards"),
    path("cards/<int:pk>/", cards.card_detail, name="card"),
    path("cards/<int:pk>/suspend/", cards.card_suspend, name="card_suspend"),
    path("cards/<int:pk>/resume/", cards.card_resume, name="card_resume"),
    path("cards/<int:pk>/revoke/", cards.card_revoke, name="card_revoke"),
    path("cards/<int:pk>/replace/", cards.card_replace, name="card_replace"),
    path("audit/", audit.audit, name="audit"),
    path("audit/export.<str:fmt>", audit.audit_export, name="audit_export"),
    path("audit/verify/", audit.audit_verify, name="audit_verify"),
    path("campaigns/", keys.campaign_list, name="campaigns"),
    path("campaigns/<int:pk>/", keys.campaign_detail, name="campaign"),
    path("campaigns/<int:pk>/approve/", keys.campaign_approve, name="campaign_approve"),
    path("campaigns/<int:pk>/start/", keys.campaign_start, name="campaign_start"),
    path("campaigns/<int:pk>/pause/", keys.campaign_pause, name="campaign_pause"),
    path("campaigns/<int:pk>/resume/", keys.campaign_resume, name="campaign_resume"),
    path("campaigns/<int:pk>/rollback/", keys.campaign_rollback, name="campaign_rollback"),
    path("campaigns/<int:pk>/cancel/", keys.campaign_cancel, name="campaign_cancel"),
    path("kek/", keys.kek, name="kek"),
    path("kek/<int:pk>/approve/", keys.kek_approve, name="kek_approve"),
    path("alerts/", alerts.alerts, name="alerts"),
    path("alerts/<int:pk>/acknowledge/", alerts.alert_ack, name="alert_ack"),
]
