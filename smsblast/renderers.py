"""Response renderers of the API (kept apart from smsblast.api, which DRF's views import at start-up)."""

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON renderer, escaping a lone surrogate instead of failing on it.

    A 400 may quote what the client sent (`"\\ud800" is not a valid choice.`). A JSON escape such as \\ud800
    decodes to a lone surrogate, which UTF-8 cannot encode: written as the same escape, the answer stays a 400.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            # This instance renders this one answer: escape everything beyond ASCII, surrogates included.
            self.ensure_ascii = True
            return super().render(data, accepted_media_type, renderer_context)
