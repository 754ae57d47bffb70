"""Upgrading a database that holds campaigns: the migration with a data fill gives existing rows what new rows get."""

import pytest

from campaigns.models import Campaign
from tests.migrating import models_before

BEFORE_AREA_SCOPE = [("campaigns", "0006_campaignrun_fanout_progress_at")]


def square(lng: float, lat: float, size: float) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [[[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]],
    }


@pytest.mark.django_db(transaction=True)
def test_migrating_gives_each_earlier_campaign_the_area_scope_its_areas_or_polygon_give():
    with models_before(BEFORE_AREA_SCOPE) as old:
        Area, User = old.get_model("smsblast", "Area"), old.get_model("smsblast", "User")
        OldCampaign = old.get_model("campaigns", "Campaign")
        Area.objects.create(code="35", name="Jawa Timur", search_name="jawa timur", level="provinsi")
        Area.objects.create(
            code="35.05",
            name="Kabupaten Blitar",
            search_name="kabupaten blitar",
            level="kabupaten",
            parent_id="35",
            boundary=square(112.0, -8.3, 0.5),
        )
        author = User.objects.create(username="officer")
        targets = [
            {"area_codes": ["35.05.01", "35.05.02"]},
            {"area_codes": ["35.05.01", "33.16"]},  # two provinces: no common area
            {"polygon": square(112.1, -8.2, 0.1)},  # inside the regency's boundary
            {"polygon": square(100.0, 0.0, 0.1)},  # inside no known boundary
            {"polygon": {"type": "Polygon", "coordinates": "unreadable"}},
            {"area_codes": [7, None, "35.05"]},  # only codes count
            {},
        ]
        for target in targets:
            OldCampaign.objects.create(author=author, title="Vaksin", text="Ayo vaksin", sender="INFO", **target)

    scopes = list(Campaign.objects.order_by("pk").values_list("area_scope", flat=True))
    assert scopes == ["35.05", "", "35.05", "", "", "35.05", ""]


BEFORE_CAP_SOURCE_ONCE = [("campaigns", "0012_choice_labels")]


def imported_before_cap_source_once(copies: dict[str, int]) -> dict[str, list[int]]:
    """Import each CAP identifier (of one sender) as many times as `copies` says, as versions before migration
    0013 could, then migrate to the latest; return each identifier's campaign ids, oldest first."""
    with models_before(BEFORE_CAP_SOURCE_ONCE) as old:
        User, OldCampaign = old.get_model("smsblast", "User"), old.get_model("campaigns", "Campaign")
        author = User.objects.create(username="officer")
        return {
            identifier: [
                OldCampaign.objects.create(
                    author=author,
                    title=f"Hujan {n}",
                    text="Waspada",
                    sender="BMKG",
                    cap_source_sender="bmkg@bmkg.go.id",
                    cap_source_identifier=identifier,
                ).pk
                for n in range(count)
            ]
            for identifier, count in copies.items()
        }


@pytest.mark.django_db(transaction=True)
def test_migrating_a_database_holding_one_cap_alert_imported_twice_keeps_the_first_as_its_import():
    from smsblast.models import AuditEvent

    ids = imported_before_cap_source_once({"CJI20210714150000": 2, "other": 1})

    (first, copy), (other,) = ids["CJI20210714150000"], ids["other"]
    identifiers = dict(Campaign.objects.values_list("pk", "cap_source_identifier"))
    assert identifiers[first] == "CJI20210714150000"
    assert identifiers[copy] == f"CJI20210714150000 (duplicate of campaign {first})"
    assert identifiers[other] == "other"
    event = AuditEvent.objects.get(action="campaign.cap_source_duplicate")
    assert event.object_id == str(copy)
    assert event.details == {"identifier": "CJI20210714150000", "imported_as": first}


@pytest.mark.django_db(transaction=True)
def test_migrating_a_database_holding_one_cap_alert_imported_three_times_marks_each_later_copy_apart():
    from smsblast.models import AuditEvent

    copies = imported_before_cap_source_once({"CJI20210714150000": 3, "x" * 300: 3})

    for identifier, (first, *later) in copies.items():
        marked = dict(Campaign.objects.filter(pk__in=[first, *later]).values_list("pk", "cap_source_identifier"))
        assert marked[first] == identifier
        assert len({marked[pk] for pk in later}) == len(later)
        assert all(len(marked[pk]) <= 300 and marked[pk] != identifier for pk in later)
    assert AuditEvent.objects.filter(action="campaign.cap_source_duplicate").count() == 4
