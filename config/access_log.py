"""gunicorn's access log with subscribers' numbers masked (`--logger-class config.access_log.NumbersMaskedLogger`).

The request line, path, query and referer of a subscriber search or an opt-out hold the number searched for.
"""

from gunicorn.glogging import Logger, SafeAtoms

from smsblast.redaction import mask_numbers


class NumbersMaskedAtoms(SafeAtoms):
    """An access line's values, each masked as the line's format reads it.

    Every request header and environment variable is an atom; the line writes a handful. Masking only those keeps a
    request of a hundred long headers from costing the worker seconds for a line that writes none of them.
    """

    def __getitem__(self, key):
        value = super().__getitem__(key)
        return mask_numbers(value) if isinstance(value, str) else value


class NumbersMaskedLogger(Logger):
    """gunicorn's logger, its access log's values passed through smsblast.redaction.mask_numbers."""

    atoms_wrapper_class = NumbersMaskedAtoms
