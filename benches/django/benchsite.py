"""Django settings of the django-pyas2 baseline (benches/throughput, BENCH_MODES=django).

A plain production-style site: DEBUG off, Django's default apps and middleware, sqlite, pyas2's
URLs (benchurls.py). Everything a run writes (database, message store) is under
$BENCH_DJANGO_DIR.
"""

import os

RUN_DIR = os.environ["BENCH_DJANGO_DIR"]

DEBUG = False
SECRET_KEY = "edinode-bench-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "pyas2",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(RUN_DIR, "db.sqlite3"),
        # Two gunicorn workers write to one file. With Django's defaults, sqlite answers "database
        # is locked" under concurrent requests (a read lock cannot be upgraded while the other
        # worker writes, and that does not wait for the timeout): take the write lock at the
        # start of each transaction, wait for it, and let readers run beside the writer (WAL).
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
# pyas2 keeps received payloads and MDNs under MEDIA_ROOT/messages/. (Its PYAS2["DATA_DIR"]
# setting makes absolute paths, which Django 5 refuses to save to.)
MEDIA_ROOT = os.path.join(RUN_DIR, "media")
# Warnings and errors (a rejected request, a failed message) go to gunicorn's stderr log, where
# the bench looks for them.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[django] [%(levelname)s] %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {"django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False}},
}

ROOT_URLCONF = "benchurls"
