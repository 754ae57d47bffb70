"""gunicorn's access log with subscribers' numbers masked (`--logger-class config.access_log.NumbersMaskedLogger`).

The request line, path, query and referer of a subscriber search or an opt-out hold the number searched for.
"""

from gunicorn.glogging import Logger

from smsblast.redaction import mask_numbers


class NumbersMaskedLogger(Logger):
    """gunicorn's logger, its access log's values passed through smsblast.redaction.mask_numbers."""

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        return {name: mask_numbers(value) if isinstance(value, str) else value for name, value in atoms.items()}
