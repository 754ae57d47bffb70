"""Errors services raise; the API maps them to 409, 403 and 400 with their message."""


class ServiceError(Exception):
    """A refused action, with a message meant for the person who asked."""


class ServiceConflict(ServiceError):
    """Wrong state for the action, or a stale content hash (409)."""


class ServiceForbidden(ServiceError):
    """The user's role or relation to the object does not allow the action (403)."""


class ServiceInvalid(ServiceError):
    """Bad input (400); `errors` maps field names to messages, `codes` some fields to a reason pages word."""

    def __init__(self, message: str, errors: dict | None = None, *, codes: dict | None = None):
        super().__init__(message)
        self.errors = errors or {}
        self.codes = codes or {}


class OutsideJurisdiction(ServiceInvalid):
    """A target outside the user's jurisdiction (400): `areas` names the areas ("33.16 Kab. Blora"), none for a
    polygon, and `jurisdiction` the user's ("35.05 Kab. Blitar")."""

    def __init__(self, message: str, errors: dict, *, areas: list[str], jurisdiction: str):
        super().__init__(message, errors)
        self.areas = areas
        self.jurisdiction = jurisdiction
