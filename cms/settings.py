"""Settings for every process (web, worker, beat), read from the environment.

CMS_ENVIRONMENT=production turns on every deployment safeguard and refuses to
start without the secrets; the default (development) runs on one machine with
embedded defaults. See README "Configuration" for every variable.
"""
from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from cms.env import env, envbool, envint, envlist, envsecret

BASE_DIR = Path(__file__).resolve().parent.parent
INSTANCE_DIR = Path(env("CMS_INSTANCE_DIR", str(BASE_DIR / "var")))

ENVIRONMENT = env("CMS_ENVIRONMENT", "development")
if ENVIRONMENT not in {"development", "production", "test"}:
    raise ImproperlyConfigured("CMS_ENVIRONMENT must be development, production or test")
PRODUCTION = ENVIRONMENT == "production"

DEBUG = envbool("DEBUG", "False")
SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required in production")
    SECRET_KEY = "development-only-not-secret-" + "x" * 40  # noqa: S105 - never used in production

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_URL = env("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",
    "axes",
    "cms",
    "audit",
    "cards",
    "keys",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "cms.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "cms.urls"
WSGI_APPLICATION = "cms.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "cms" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "cms.web.context.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envsecret("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'cms.sqlite3'}",
        # seconds a connection is kept for the next request or Celery task (0: a new one every time, 16 ms
        # more per card on PostgreSQL, bench/cms_pipeline.py)
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "60"),
        # a kept connection (DATABASE_CONN_MAX_AGE > 0) is checked before it is reused by a request or a
        # Celery task, so a restarted PostgreSQL costs no failed request (tests/faults/test_postgres_restart)
        conn_health_checks=True,
    )
}
if DATABASES["default"]["CONN_MAX_AGE"] != 0:
    # Celery's Django fixup closes every connection before and after each task unless this is set (it then
    # force-closes only every 2 x this many tasks): cms/celery.py closes them as Django's request cycle does
    # (close_old_connections: past CONN_MAX_AGE, unusable or in error), so DATABASE_CONN_MAX_AGE reaches
    # the workers too.
    CELERY_DB_REUSE_MAX = 2**30
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes (web, worker) write; wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # BEGIN IMMEDIATE: a transaction that reads and then writes (every audited change does)
    # would otherwise fail at once with "database is locked" when it must upgrade its lock.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # WAL: readers no longer block the writer nor the writer them, and a commit is one fsync of the
    # log instead of the rollback journal's three (measured: bench/pipeline.py, see README). Set on
    # the file, so every process opening it agrees. synchronous stays FULL: a committed key version
    # survives a power loss.
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(INSTANCE_DIR / "static")))
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # also makes INSTANCE_DIR for the SQLite file
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Web UI sign-in: brute-force lockout (django-axes) and re-authentication ------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out username+IP before the password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = envint("AXES_COOLOFF_MINUTES", "15") / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "web/locked_out.html"
# Sensitive actions (approving a campaign, revoking a card, KEK rotation) ask for the password
# again unless it was given within this many seconds.
REAUTH_WINDOW_SECONDS = envint("REAUTH_WINDOW_SECONDS", "300")

# --- Security (production turns everything on; check --deploy must pass) ---------------
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", "3600")
SESSION_SAVE_EVERY_REQUEST = True  # SESSION_COOKIE_AGE is an idle timeout, not a fixed lifetime
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "True")
    if envbool("SECURE_PROXY_SSL_HEADER", "False"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]

# API tokens are stored as HMAC-SHA256 digests keyed with this pepper.
API_TOKEN_PEPPER = envsecret("API_TOKEN_PEPPER") or SECRET_KEY

# --- Redis and Celery -------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "120")
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", "100")
CELERY_RESULT_EXPIRES = envint("CELERY_RESULT_EXPIRES", "3600")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cms"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "False")
CELERY_BEAT_SCHEDULE = {
    # retired key versions past their grace period are destroyed in Vault
    "keys-grace-sweep": {"task": "keys.grace_sweep", "schedule": envint("KEY_GRACE_SWEEP_SECONDS", "3600")},
    # pool secrets' wrapped keys that no key version took (keys/pool.py), removed from Vault
    "keys-pool-sweep": {"task": "keys.pool_sweep", "schedule": envint("KEY_POOL_SWEEP_SECONDS", "3600")},
    # alert rules (cards.tasks_alerts): failed authentications, unwrap rate, station IP and heartbeat
    "alerts-rules": {"task": "alerts.run_rules", "schedule": envint("ALERT_RULES_SECONDS", "60")},
    # the whole audit chain is walked: less often
    "alerts-audit-chain": {"task": "alerts.audit_chain", "schedule": envint("ALERT_AUDIT_VERIFY_SECONDS",
                                                                             "3600")},
    # MES webhooks: new audit events become deliveries (the outbox), each delivered by its own task
    "webhooks-collect": {"task": "webhooks.collect", "schedule": envint("WEBHOOK_COLLECT_SECONDS", "10")},
    # provisioning jobs that can no longer report: failed, their key changes and creates probed
    "jobs-expiry-sweep": {"task": "cards.expire_jobs", "schedule": envint("CMS_JOB_SWEEP_SECONDS", "60")},
}

# --- Alerts (seed 003 "Auditing & Monitoring"; see audit/alerts.py, cards/alerts.py) ------------
ALERT_FAILED_AUTH_THRESHOLD = envint("ALERT_FAILED_AUTH_THRESHOLD", "3")
ALERT_FAILED_AUTH_WINDOW_SECONDS = envint("ALERT_FAILED_AUTH_WINDOW_SECONDS", "900")
ALERT_UNWRAP_THRESHOLD = envint("ALERT_UNWRAP_THRESHOLD", "1000")
ALERT_UNWRAP_WINDOW_SECONDS = envint("ALERT_UNWRAP_WINDOW_SECONDS", "300")
ALERT_STATION_HEARTBEAT_MISSES = envint("ALERT_STATION_HEARTBEAT_MISSES", "3")
ALERT_STATION_ALLOWED_NETWORKS = envlist("ALERT_STATION_ALLOWED_NETWORKS")

# --- MES webhooks (cards/webhooks.py) -----------------------------------------------------
WEBHOOK_TIMEOUT_SECONDS = envint("WEBHOOK_TIMEOUT_SECONDS", "5")
WEBHOOK_MAX_ATTEMPTS = envint("WEBHOOK_MAX_ATTEMPTS", "8")
WEBHOOK_BACKOFF_SECONDS = envint("WEBHOOK_BACKOFF_SECONDS", "10")
WEBHOOK_BACKOFF_MAX_SECONDS = envint("WEBHOOK_BACKOFF_MAX_SECONDS", "3600")

# --- Vault (HashiCorp Vault API; OpenBao locally) -----------------------------------------
VAULT_ADDR = env("VAULT_ADDR", "http://127.0.0.1:8200")
VAULT_TOKEN = envsecret("VAULT_TOKEN")
VAULT_ROLE_ID = env("VAULT_ROLE_ID")
VAULT_SECRET_ID = envsecret("VAULT_SECRET_ID")
VAULT_APPROLE_MOUNT = env("VAULT_APPROLE_MOUNT", "approle")
VAULT_CACERT = env("VAULT_CACERT")
VAULT_NAMESPACE = env("VAULT_NAMESPACE")
VAULT_TRANSIT_MOUNT = env("VAULT_TRANSIT_MOUNT", "transit")
VAULT_KV_MOUNT = env("VAULT_KV_MOUNT", "secret")
VAULT_PREFIX = env("VAULT_PREFIX", "cms")
VAULT_TIMEOUT = envint("VAULT_TIMEOUT", "5")
if PRODUCTION and not (VAULT_TOKEN or (VAULT_ROLE_ID and VAULT_SECRET_ID)):
    raise ImproperlyConfigured(
        "Vault auth is required in production: VAULT_TOKEN or VAULT_ROLE_ID + VAULT_SECRET_ID")

# --- Provisioning ------------------------------------------------------------------------
# Seconds a job's sealed keys stay valid; seed 002 suggests 5 for a station on the factory floor.
CMS_JOB_TTL_SECONDS = envint("CMS_JOB_TTL_SECONDS", "30")
CMS_JOB_MAX_DELIVERIES = envint("CMS_JOB_MAX_DELIVERIES", "3")
# Vault Transit Ed25519 key that signs jobs; empty: "<VAULT_PREFIX>-job-signing" (inside the CMS policy).
CMS_JOB_SIGNING_KEY = env("CMS_JOB_SIGNING_KEY")
KEY_GRACE_PERIOD_DAYS = envint("KEY_GRACE_PERIOD_DAYS", "30")
# A pool reference (keys/keystore.py `pooled`) not handed out this long after its refill is dropped by its
# process; the pool sweep (keys/pool.py) removes the wrapped keys no version took from pool secrets older
# than twice this. The second period is the margin for a transaction that took a reference at the last moment.
KEY_POOL_MAX_AGE_SECONDS = envint("KEY_POOL_MAX_AGE_SECONDS", "3600")
if KEY_POOL_MAX_AGE_SECONDS < 60:
    raise ImproperlyConfigured("KEY_POOL_MAX_AGE_SECONDS must be at least 60 (a transaction's margin)")

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "cms.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "cards.api.base.CmsAutoSchema",  # documents 400/401/403/404/409/415/503
    "DEFAULT_PAGINATION_CLASS": "cms.api.StrictLimitOffsetPagination",  # bad limit/offset: 400
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "cms.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"anon": "60/min"},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Card management system API",
    "DESCRIPTION": "REST API for MES integration: tenants, profiles, cards, keys (metadata), "
                   "stations, orders, jobs and the audit trail.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "state" or "role" of their own: name each enum after its meaning.
    "ENUM_NAME_OVERRIDES": {"KeyVersionStateEnum": "keys.models.VersionState",
                            "JobStateEnum": "cards.models.orders.JobState",
                            "PersonRoleEnum": "cards.api.access.PERSON_ROLES",
                            "WebhookEventEnum": "cards.models.webhooks.WebhookEvent"},
}

# --- Logging (JSON lines through structlog) ---------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "cms.logging.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "hvac": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
}
