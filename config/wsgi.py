"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

# Production unless told otherwise (`make run` and the tests say which): a deploy that forgets to say never
# runs with DEBUG on and a development key.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")
application = get_wsgi_application()
