"""Reads over areas and subscribers shared by campaigns and the send pipeline."""

from collections.abc import Iterable

from django.db.models import QuerySet

from smsblast.models import Subscriber, area_subtree_q


def subscribers_in_area(
    area_codes: Iterable[str], *, audience: dict | None = None, opted_in_only: bool = False
) -> QuerySet[Subscriber]:
    """Return the subscribers whose home area is one of `area_codes` or lies below one.

    `audience` narrows them: {"languages": ["id", "jv"]} keeps those languages and
    {"operators": ["telkomsel"]} those operators' numbers. Opted-out subscribers are
    included unless `opted_in_only`, so an estimate can count them apart.
    """
    # "area__code" is the foreign key's own column (code is Area's key), so this needs no join;
    # "area_id" would refuse the startswith lookup.
    queryset = Subscriber.objects.filter(area_subtree_q("area__code", list(area_codes)))
    audience = audience or {}
    if audience.get("languages"):
        queryset = queryset.filter(language__in=audience["languages"])
    if audience.get("operators"):
        queryset = queryset.filter(operator__slug__in=audience["operators"])
    if opted_in_only:
        queryset = queryset.filter(opted_out_at__isnull=True)
    return queryset
