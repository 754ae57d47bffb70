"""Core REST endpoints: SMS text analysis; shared API helpers."""

import copy

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.services import SENDER_MAX_LENGTH, SENDER_RE, SENDER_RULE, sender_warning, text_warning
from smsblast import sms
from smsblast.errors import ServiceInvalid
from smsblast.roles import IsStaffRole


class HashedTokenScheme(OpenApiAuthenticationExtension):
    """Describe `Authorization: Bearer <token>` in the OpenAPI schema, so Swagger UI can send it."""

    target_class = "smsblast.authentication.HashedTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A token from `manage.py create_user`."}


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and lists instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextAnalyzeSerializer(serializers.Serializer):
    # Ten segments never hold more than 1,530 characters; the cap keeps a huge body cheap to refuse.
    text = StrictCharField(max_length=5000, trim_whitespace=False, allow_blank=True)
    sender = StrictCharField(
        max_length=SENDER_MAX_LENGTH,
        required=False,
        allow_blank=True,
        help_text="A sender ID to check with the text: one submission would refuse is a 400, one longer than "
        "handsets show gets a warning.",
    )


def validated(serializer: serializers.Serializer) -> dict:
    """Return the serializer's validated data, or raise ServiceInvalid naming each bad field (a 400 with detail)."""
    if not serializer.is_valid():
        # A Serializer's errors are a dict of field names, a body that is no JSON object under "non_field_errors".
        parts = []
        for name, messages in serializer.errors.items():
            message = messages[0] if isinstance(messages, list) and messages else messages
            if isinstance(message, dict):
                # A list's items are keyed by position, each with its own list of messages: name the first.
                message = "; ".join(f"{key}: {_first(value)}" for key, value in message.items())
            parts.append(f"{name}: {message}")
        raise ServiceInvalid(" ".join(parts), dict(serializer.errors))
    return serializer.validated_data


def _first(messages):
    return messages[0] if isinstance(messages, list) and messages else messages


NON_GSM_CHAR = inline_serializer(
    "NonGsmChar",
    {
        "char": serializers.CharField(),
        "position": serializers.IntegerField(),
        "name": serializers.CharField(),
        "replacement": serializers.CharField(allow_null=True),
        "start": serializers.IntegerField(
            help_text=(
                "Where the text the replacement stands in for begins: `position`, or for a combining mark that "
                "composes with the letter before it into a GSM-7 letter (e and U+0301 into é), that letter's."
            )
        ),
    },
)


def _text_analysis_fields() -> dict:
    return {
        "encoding": serializers.ChoiceField(choices=["GSM7", "UCS2"]),
        "length": serializers.IntegerField(help_text="Characters."),
        "units": serializers.IntegerField(help_text="Septets (GSM-7) or UTF-16 code units (UCS-2)."),
        "segments": serializers.IntegerField(),
        "per_segment": serializers.IntegerField(help_text="Units a part holds: 160/153 (GSM-7) or 70/67 (UCS-2)."),
        "remaining": serializers.IntegerField(help_text="Units left in the last part."),
        # A copy each time: a child field belongs to one list, and one class keeps one NonGsmChar component.
        "non_gsm": serializers.ListField(child=copy.deepcopy(NON_GSM_CHAR)),
        "suggestion": serializers.CharField(allow_null=True, help_text="The text with GSM-7 replacements."),
        "suggestion_encoding": serializers.ChoiceField(choices=["GSM7", "UCS2"], allow_null=True),
        "suggestion_segments": serializers.IntegerField(allow_null=True),
        "parts": serializers.ListField(child=serializers.CharField()),
    }


TEXT_ANALYSIS = inline_serializer("TextAnalysis", _text_analysis_fields())
TEXT_ANALYZE_RESULT = inline_serializer(
    "TextAnalyzeResult",
    {
        **_text_analysis_fields(),
        "warnings": serializers.DictField(
            child=serializers.CharField(),
            help_text=(
                "What is accepted but worth a second look, by field; empty when nothing is. `sender`: the sender ID "
                "is longer than the 11 characters GSM handsets show, so it may appear cut short and the operator "
                "may shorten it. `text`: the text holds characters that are not seen as they are sent (zero-width, "
                "direction and control characters, look-alikes of letters and digits, blanks at either end), each "
                "named with its code point and position, or links to a domain in letters outside ASCII, named with "
                "the ASCII form it opens as."
            ),
        ),
    },
)


class TextAnalyzeView(APIView):
    """Return the encoding, length, segments, per-segment size, non-GSM characters and a GSM-7 suggestion."""

    permission_classes = [IsStaffRole]

    @extend_schema(
        request=TextAnalyzeSerializer,
        responses={200: TEXT_ANALYZE_RESULT, 400: OpenApiResponse(description="Bad text or sender ID")},
    )
    def post(self, request):
        data = validated(TextAnalyzeSerializer(data=request.data))
        try:
            analysis = sms.analyze(data["text"])
        except sms.TextError as exc:
            raise ServiceInvalid(str(exc), {"text": str(exc)}) from exc
        sender = data.get("sender", "").strip()
        if sender and not SENDER_RE.match(sender):
            # Checked as submission checks it: a sender the analyzer passes is one a campaign may be sent with.
            raise ServiceInvalid(f"sender: {SENDER_RULE}", {"sender": SENDER_RULE})
        warnings = {"sender": sender_warning(sender), "text": text_warning(data["text"])}
        return Response({**analysis.as_dict(), "warnings": {field: text for field, text in warnings.items() if text}})
