"""Settings shared by every environment, read from the environment (django-environ)."""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env is optional; the process environment always wins.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("SECRET_KEY", default="")
# Former keys while rotating SECRET_KEY: sessions and sealed secrets (smsblast.sealing) made with them stay readable.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
DEBUG = env.bool("DEBUG", default=False)
# `seed_demo` creates users with published passwords: never where the settings are production ones.
DEMO_DATA_ALLOWED = True
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    # Before django.contrib.auth: of two apps with a command of the same name the first listed wins, and smsblast's
    # changepassword and createsuperuser (Django's, audited) replace auth's.
    "smsblast",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "operators",
    "campaigns",
]

MIDDLEWARE = [
    # GET /healthz for the proxy or orchestrator, answered before the HTTPS redirect and the host check.
    "smsblast.health.HealthCheckMiddleware",
    # GET /metrics for a monitoring scraper, with METRICS_TOKEN as its bearer token (off when unset).
    "smsblast.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Scripts only from this site, no framing, forms posted only here (CONTENT_SECURITY_POLICY below).
    "smsblast.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A body larger than any accepted upload: 413 before Django spools it to disk.
    "smsblast.middleware.RefuseOversizedBodyMiddleware",
    # A NUL in the path, query or form would make PostgreSQL fail the query: 400 before any view runs.
    "smsblast.middleware.RefuseNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Indonesian unless the user chose English: the browser's Accept-Language is not consulted.
    "smsblast.middleware.IndonesianByDefaultMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # An unknown /api/ path answers JSON under DEBUG too (in production handler404 does).
    "smsblast.middleware.ApiNotFoundJsonMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # A session without the second factor its user's role now asks for is logged out (SMSBLAST_TWO_FACTOR_ROLES).
    "smsblast.middleware.TwoFactorSessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # After the session ends, a poll or partial sends the window to the login page instead of nesting it.
    "smsblast.middleware.HtmxLoginRedirectMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "smsblast.context_processors.roles",
            ],
        },
    },
]

# SQLite by default so `make run` needs nothing installed; DATABASE_URL switches to PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL plus a busy timeout lets web, worker and beat share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A server that takes the connection but never answers (stuck, or a pooler whose server is gone) fails a new
    # connection after this many seconds, so requests and /healthz answer 503 instead of holding their threads;
    # `?connect_timeout=N` in DATABASE_URL sets another.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "smsblast.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "id"
LANGUAGES = [("id", "Bahasa Indonesia"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Jakarta"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
# Large CSV uploads stream to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# The largest API body read into memory (file uploads stream past it). JSON parsing takes many times the body's
# size (20 MB of empty objects grew a process by 560 MB); the largest request the contracts allow, 10,000
# reports with every field at its longest and indented, is about 3.3 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=8 * 1024 * 1024)
# The largest subscriber CSV taken in one upload (web page, API and admin); bigger files go in parts or
# through `manage.py import_subscribers`, which has no limit.
SUBSCRIBER_IMPORT_MAX_BYTES = env.int("SUBSCRIBER_IMPORT_MAX_BYTES", default=200 * 1024 * 1024)
# A pending or running import silent this long (no chunk committed) lost its task or its worker; it may be resumed.
SUBSCRIBER_IMPORT_STALE_SECONDS = env.int("SUBSCRIBER_IMPORT_STALE_SECONDS", default=300)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "smsblast.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "smsblast.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's two, the JSON one answering a quoted lone surrogate with its escape instead of a 500.
    "DEFAULT_RENDERER_CLASSES": [
        "smsblast.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "smsblast.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "smsblast.api.exception_handler",
}
# Sent with every answer: scripts, fonts and fetches from this site only (htmx, the vendored Swagger UI), images
# also as data: URLs, inline styles allowed (progress bars), no plugins, no framing, forms posted only here.
CONTENT_SECURITY_POLICY = env(
    "CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)

SPECTACULAR_SETTINGS = {
    "TITLE": "smsblast API",
    "DESCRIPTION": "Public-information SMS campaigns: officers, approvers and operators.",
    "VERSION": "1.0.0",
    # Swagger UI assets come from drf-spectacular-sidecar, so the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # The API map is for its users (staff sessions, officer and operator tokens), not for anyone asking.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # report.csv is served bare and, through the router, with a slash: document it once.
    "PREPROCESSING_HOOKS": ["smsblast.api_schema.drop_trailing_slash_twins"],
    # Every error answer is JSON with a `detail`: say so for each operation (the enum hook is the default one).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "smsblast.api_schema.document_errors",
    ],
    # Several models have a `status` field; name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "CampaignStatusEnum": "campaigns.models.Campaign.Status",
        "RunStatusEnum": "campaigns.models.CampaignRun.Status",
        "BatchStatusEnum": "campaigns.models.DispatchBatch.Status",
        "DeliveryStatusEnum": "campaigns.models.Delivery.Status",
        "ImportStateEnum": "smsblast.models.SubscriberImport.State",
        "AreaBroadcastStateEnum": "operators.models.AreaBroadcast.State",
        "EncodingEnum": ["GSM7", "UCS2"],
    },
}

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# Tasks that must not run twice are idempotent and ack late; a crash redelivers them.
CELERY_TASK_ACKS_LATE = False
# One message at a time per process: a worker busy with a long fan-out must not sit on send_batch tasks
# that an idle worker could run (acks_late tasks keep their prefetch slot until they finish).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep database connections across tasks (Celery's Django fixup closes them around every task otherwise);
# config/celery.py closes stale or broken ones per task the way Django does per request.
CELERY_DB_REUSE_MAX = 1000
# Redis redelivers unacked tasks after this many seconds; leases are shorter than this. A broker that takes
# connections but never answers (a host gone silent) fails a send within seconds instead of holding the request or
# task that sends for ever: the change it follows is committed, and the reconciler re-drives what was not enqueued.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 2, "socket_timeout": 3}
# Three tries at most (a connection Redis dropped on a restart is replaced on the second): about 10 s in all.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BEAT_SCHEDULE = {
    # Due runs start within two seconds of their time: poll every second (rows under a lock, no far ETAs).
    "start-due-runs": {"task": "campaigns.tasks.start_due_runs", "schedule": 1.0},
    # Re-drive expired leases and lost tasks, expire overdue deliveries, complete runs (invariant 4).
    "reconcile-dispatch": {"task": "campaigns.tasks.reconcile_dispatch", "schedule": 15.0},
    # Area broadcasts: start windows, pass cancels on within seconds, retry failed operators, end windows.
    "area-broadcasts-tick": {"task": "operators.area_broadcasts_tick", "schedule": 2.0},
    # Emails whose task was lost, whose worker died or whose mail server refused are sent again.
    "notifications-redrive": {"task": "smsblast.notifications_redrive", "schedule": 30.0},
    # Uploaded imports whose task never reached a worker (the broker was down) are queued again.
    "subscriber-imports-redrive": {"task": "smsblast.subscriber_imports_redrive", "schedule": 60.0},
    # Once a day, at 02:30 WIB: the deliveries of runs past SMSBLAST_DELIVERY_RETENTION_DAYS are removed, a run at a
    # time by a task on the default queue (a run of a million takes minutes, which the control queue cannot wait for;
    # one at a time, so a fan-out due meanwhile is not queued behind all of them).
    "prune-deliveries": {"task": "campaigns.tasks.prune_deliveries", "schedule": crontab(hour=19, minute=30)},
}
# Beat's housekeeping has a queue of its own, consumed by the `control` process as well as the workers: a
# due run starts on time even while every worker process is busy fanning out or waiting for rate-limit
# tokens (they may wait up to half a lease for them).
CELERY_TASK_ROUTES = {
    "campaigns.tasks.start_due_runs": {"queue": "control"},
    "campaigns.tasks.reconcile_dispatch": {"queue": "control"},
    "operators.area_broadcasts_tick": {"queue": "control"},
    "smsblast.notifications_redrive": {"queue": "control"},
    "smsblast.subscriber_imports_redrive": {"queue": "control"},
    "campaigns.tasks.prune_deliveries": {"queue": "control"},
    # Emails wait on the mail server (up to EMAIL_TIMEOUT per attempt): only the `mail` process takes them, never
    # a worker sending batches or the control process, so a mail server that does not answer holds up no run.
    "smsblast.notification_send": {"queue": "mail"},
}
# First retry of an operator that failed an area broadcast; doubles per attempt up to two minutes.
AREA_BROADCAST_RETRY_BASE_SECONDS = env.float("AREA_BROADCAST_RETRY_BASE_SECONDS", default=2.0)
# send_batch is routed per call to the operator's queue ("dispatch.<slug>"); everything else uses "default".
# A leased batch is given back to the reconciler if its worker has not answered within this many seconds.
DISPATCH_LEASE_SECONDS = env.int("DISPATCH_LEASE_SECONDS", default=60)
# A worker consuming every operator's queue looks this often for operators added since it started.
WORKER_QUEUE_REFRESH_SECONDS = env.float("WORKER_QUEUE_REFRESH_SECONDS", default=10.0)
# Pending batches untouched this long (their task may be lost) are enqueued again by the reconciler.
DISPATCH_REDRIVE_AFTER_SECONDS = env.int("DISPATCH_REDRIVE_AFTER_SECONDS", default=60)

# Days a finished run keeps its deliveries (each recipient's number and state) before the daily prune removes them,
# keeping the run's figures (UU PDP 27/2022: personal data no longer than its purpose needs); 0 keeps them for good.
SMSBLAST_DELIVERY_RETENTION_DAYS = env.int("SMSBLAST_DELIVERY_RETENTION_DAYS", default=180)

# Where operators post delivery reports back to; the simulator and adapters use it.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000")
# Email notifications (smsblast/notifications.py): printed by the mail process unless EMAIL_URL
# names a mail server, e.g. smtp+tls://user:password@mail.example.go.id:587 (django-environ's email_url).
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="smsblast <noreply@localhost>")
# Seconds a mail server may take to answer; a notification it never answers is retried by the redrive.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
# The CAP <sender> of exported alerts (e.g. "bpbd@blitarkab.go.id"); empty: smsblast@<host of PUBLIC_BASE_URL>.
CAP_SENDER = env("CAP_SENDER", default="")
# A PEM file of the certificates CAP issuers (BMKG, BNPB, a BPBD) gave out of band: an imported alert whose XML
# signature verifies against one of them is shown to its approver as verified (campaigns/cap_signature.py).
CAP_TRUSTED_CERTIFICATES = env("CAP_TRUSTED_CERTIFICATES", default="")
# Import only alerts so verified: unsigned ones, or signed by anyone else, are refused (a Cancel too).
CAP_REQUIRE_SIGNATURE = env.bool("CAP_REQUIRE_SIGNATURE", default=False)

# The bearer token a monitoring system sends to GET /metrics (smsblast/metrics.py); empty: no /metrics.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# Wrong passwords allowed for one username from one address before log-in is refused for a while (0: no limit).
LOGIN_FAILURES_ALLOWED = env.int("LOGIN_FAILURES_ALLOWED", default=5)
# How long the count of failed log-ins lasts after the last failure (and so how long a lockout lasts).
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)
# Roles whose users give a code of their authenticator app (TOTP) after their password at log-in, e.g.
# "approver,admin"; empty: password only. API tokens are not affected. On by default in prod.py.
SMSBLAST_TWO_FACTOR_ROLES = [role for role in env.list("SMSBLAST_TWO_FACTOR_ROLES", default=[]) if role]
# How long a right password waits for its code before the log-in starts over.
TWO_FACTOR_PENDING_SECONDS = 300
# Reverse proxies in front of the web process that append the client's address to X-Forwarded-For; the
# log-in throttle counts per client address, which without them is the proxy's for everyone (0: none).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Subscribers' numbers are personal data: a path naming one ("Not Found: /api/v1/subscribers/+62…") is masked.
    "filters": {"numbers_masked": {"()": "smsblast.redaction.NumbersMaskedFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["numbers_masked"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
