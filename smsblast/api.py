"""Shared REST API pieces: errors that always carry a message."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from smsblast.text import CSV_SEPARATORS

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait when the database cannot answer.
DATABASE_RETRY_AFTER_SECONDS = 5


class Conflict(APIException):
    """The object is not in a state that allows this action (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this action."
    default_code = "conflict"


class Gone(APIException):
    """What was asked for existed and was removed for good (410), e.g. under the retention policy."""

    status_code = status.HTTP_410_GONE
    default_detail = "This was removed."
    default_code = "gone"


class Pagination(LimitOffsetPagination):
    """Limit/offset pages whose `limit` is capped, so a huge one is not passed on to the database."""

    max_limit = 10_000


class FileContentNegotiation(DefaultContentNegotiation):
    """Negotiation of an endpoint that answers a file (CSV, CAP XML): any Accept gets the file.

    The file is not rendered by DRF, so no renderer names its type, and a client asking for exactly that
    type (`Accept: text/csv`) would otherwise be refused with 406. Errors are answered in JSON whatever the
    Accept: a browser following a download link gets the reason, not the browsable API's page about it.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        for renderer in renderers:
            if renderer.format == "json":
                return renderer, renderer.media_type
        return renderers[0], renderers[0].media_type


CSV_SEPARATOR_PARAMETER = OpenApiParameter(
    "sep",
    str,
    enum=list(CSV_SEPARATORS),
    description="`comma` (the default) or `semicolon`: Excel set for Indonesia separates cells by semicolons and "
    "opens a comma-separated file as one column.",
)


def csv_separator(request) -> str:
    """Return the separator a CSV download is asked for by its `sep` parameter: "," unless it names semicolons."""
    from smsblast.errors import ServiceInvalid

    name = request.query_params.get("sep") or "comma"
    if name not in CSV_SEPARATORS:
        raise ServiceInvalid(f"sep must be {' or '.join(CSV_SEPARATORS)}.", {"sep": "invalid"})
    return CSV_SEPARATORS[name]


def exception_handler(exc, context):
    """Turn service errors into 4xx answers with a `detail` message."""
    from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid

    if isinstance(exc, ServiceConflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ServiceForbidden):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, ServiceInvalid):
        return Response({"detail": str(exc), "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoPermissionDenied):
        return Response({"detail": str(exc) or "Forbidden."}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, RequestDataTooBig):
        # Raised while DRF reads the body; left to Django it becomes the HTML 400 page, which no client reads.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is larger than the {limit} bytes accepted."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    # Met while a multipart body is parsed; left to Django they become the HTML 400 page as well.
    if isinstance(exc, TooManyFilesSent):
        detail = f"Send at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
        return Response({"detail": detail}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, TooManyFieldsSent):
        detail = f"Send at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields in the query and the form."
        return Response({"detail": detail}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable, restarting or refused the connection (a deadlock or a cancelled statement
        # too): services write in transactions, so the request's change is whole or absent, and the same request
        # may succeed shortly. A 503 with Retry-After says so; a 500 would read as a defect of the request.
        # Logged with its traceback all the same.
        request = context.get("request")
        logger.error("Database unavailable for %s", getattr(request, "path", "?"), exc_info=exc)
        response = Response(
            {"detail": "The database is unavailable at the moment; try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    return drf_exception_handler(exc, context)


def not_found(request, exception=None):
    """Answer a path no URL matches: JSON with a `detail` under /api/, the not-found page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "There is no such API endpoint; /api/v1/schema/ lists them."}, status=404)
    return defaults.page_not_found(request, exception)
