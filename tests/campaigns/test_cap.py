"""CAP 1.2 export validates against the OASIS schema; CAP import turns real-agency alerts into drafts."""

import random
import re
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone, translation
from lxml import etree
from shapely.geometry import shape
from shapely.ops import unary_union

from campaigns.cap_import import DEFAULT_WINDOW, MAX_AREA_SHAPES, _cap_create, cap_fit_text, cap_parse
from campaigns.models import Approval, Campaign, Priority
from campaigns.services import (
    MAX_AREA_CODES,
    campaign_approve,
    campaign_cancel,
    campaign_content,
    campaign_content_hash,
    campaign_submit,
    campaign_update,
    campaign_withdraw_by_issuer,
)
from operators.areageom import parse_cap_polygon
from operators.models import BroadcastSettings
from smsblast.errors import ServiceConflict, ServiceForbidden, ServiceInvalid
from smsblast.models import Area, AreaLevel, AuditEvent, Role
from tests.campaigns.factories import CampaignFactory
from tests.conftest import client_for
from tests.operators.area_scripted import blitar_areas, broadcast_campaign, regency_boundary
from tests.operators.factories import OperatorFactory
from tests.smsblast.factories import AreaFactory, UserFactory

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
IMPORT_URL = "/api/v1/cap/"


@cache
def cap_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(Path(settings.BASE_DIR).parent / "shared" / "data" / "cap" / "cap12.xsd")))


@pytest.fixture(autouse=True)
def english():
    """Read what the services answer in English: tests of the Indonesian pages and API ask for Indonesian."""
    with translation.override("en"):
        yield


@pytest.fixture
def api_client_for(api_client_for):
    """Return a factory of API clients that ask for English answers (Accept-Language: en)."""

    def build(user):
        client = api_client_for(user)
        client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
        return client

    return build


@pytest.fixture
def officer_client(db, api_client_for):
    user = UserFactory(role=Role.OFFICER)
    client = api_client_for(user)
    client.user = user
    return client


def _export(client, campaign) -> etree._Element:
    # As a CAP consumer asks for it: only the CAP type is acceptable.
    response = client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml", HTTP_ACCEPT="application/cap+xml")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/cap+xml")
    document = etree.fromstring(response.content)
    cap_schema().assertValid(document)
    return document


def _find(document, path: str) -> list[str]:
    return [element.text for element in document.iterfind(path.replace("cap:", CAP))]


# --- export --------------------------------------------------------------------------------


def test_a_polygon_only_campaign_over_papua_exports_its_times_in_wit(officer_client):
    from tests.smsblast.test_preview import box

    AreaFactory(code="94", name="Papua Tengah", boundary=box(135.0, -4.5, 137.0, -3.0))
    campaign = broadcast_campaign(area_codes=[], polygon=box(135.2, -3.8, 135.6, -3.4))
    document = _export(officer_client, campaign)
    assert _find(document, "cap:sent")[0].endswith("+09:00")
    assert _find(document, "cap:info/cap:expires")[0].endswith("+09:00")


def test_a_codes_only_campaign_exports_a_valid_alert_with_kemendagri_geocodes(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")  # no boundary loaded: geocodes only
    campaign = broadcast_campaign(area_codes=["35.05"])
    document = _export(officer_client, campaign)
    assert _find(document, "cap:status") == ["Actual"]
    assert _find(document, "cap:msgType") == ["Alert"]
    assert _find(document, "cap:scope") == ["Public"]
    assert _find(document, "cap:sent")[0].endswith("+07:00")  # WIB, an explicit offset
    assert _find(document, "cap:info/cap:language") == ["id-ID"]
    assert _find(document, "cap:info/cap:description") == [campaign.text]
    assert _find(document, "cap:info/cap:instruction") == [campaign.instruction]
    assert _find(document, "cap:info/cap:area/cap:areaDesc") == ["Kabupaten Blitar"]
    assert _find(document, "cap:info/cap:area/cap:polygon") == []
    assert _find(document, "cap:info/cap:area/cap:geocode/cap:valueName") == ["KEMENDAGRI"]
    assert _find(document, "cap:info/cap:area/cap:geocode/cap:value") == ["35.05"]
    # Normal priority and nothing chosen: the defaults by priority.
    assert _find(document, "cap:info/cap:urgency") == ["Expected"]
    assert _find(document, "cap:info/cap:expires")[0].startswith(
        campaign.ends_at.astimezone(timezone.get_fixed_timezone(7 * 60)).strftime("%Y-%m-%dT%H:%M")
    )


def test_the_design_example_sender_of_13_characters_is_the_alerts_sender_name_whole(officer_client):
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(area_codes=["35.05"], sender="PEMKAB-BLITAR")
    assert _find(_export(officer_client, campaign), "cap:info/cap:senderName") == ["PEMKAB-BLITAR"]


def test_a_campaign_with_boundaries_and_a_drawn_polygon_exports_closed_lat_lon_polygons(officer_client):
    blitar_areas()
    drawn = {"type": "Polygon", "coordinates": [[[112.5, -8.0], [112.6, -8.0], [112.6, -8.1], [112.5, -8.0]]]}
    campaign = broadcast_campaign(area_codes=["35.05"], polygon=drawn, priority=Priority.URGENT)
    document = _export(officer_client, campaign)
    polygons = [parse_cap_polygon(text) for text in _find(document, "cap:info/cap:area/cap:polygon")]
    assert polygons
    for text in _find(document, "cap:info/cap:area/cap:polygon"):
        pairs = text.split()
        assert pairs[0] == pairs[-1]
        lat, lon = map(float, pairs[0].split(","))
        assert -9 < lat < -7 and 111 < lon < 113  # lat first
    covered = unary_union(polygons)
    assert covered.contains(shape(regency_boundary("35.05")))
    assert covered.contains(shape(drawn))
    assert _find(document, "cap:info/cap:urgency") == ["Immediate"]
    assert _find(document, "cap:info/cap:severity") == ["Severe"]


def test_an_area_broadcast_exports_the_area_its_approval_froze_though_a_boundary_was_edited_since(officer_client):
    from tests.smsblast.test_preview import box

    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar", boundary=box(112.0, -8.3, 112.5, -7.9))
    campaign = broadcast_campaign(approved=False, area_codes=["35.05"])
    OperatorFactory()
    campaign_submit(campaign=campaign, actor=campaign.author)
    approver = UserFactory(role=Role.APPROVER)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    approved = _find(_export(officer_client, campaign), "cap:info/cap:area/cap:polygon")
    assert approved

    # Before its window opens, an admin loads another boundary for the regency: the operators are still sent the
    # area the approver approved (Approval.area_shapes), and so is the alert.
    Area.objects.filter(code="35.05").update(boundary=box(120.0, -5.0, 120.5, -4.6))

    assert _find(_export(officer_client, campaign), "cap:info/cap:area/cap:polygon") == approved


def test_an_exercise_exports_with_status_exercise(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    document = _export(officer_client, broadcast_campaign(exercise=True))
    assert _find(document, "cap:status") == ["Exercise"]


def test_a_cancelled_campaign_exports_a_cancel_that_references_the_original(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign()
    original = _export(officer_client, campaign)
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    cancel = _export(officer_client, campaign)
    assert _find(cancel, "cap:msgType") == ["Cancel"]
    sender, identifier, sent = (_find(original, f"cap:{name}")[0] for name in ("sender", "identifier", "sent"))
    assert _find(cancel, "cap:references") == [f"{sender},{identifier},{sent}"]
    assert _find(cancel, "cap:identifier") != [identifier]


def test_a_reapproved_campaign_exports_under_a_new_identifier_and_each_export_is_stable(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign()
    first = _find(_export(officer_client, campaign), "cap:identifier")
    assert _find(_export(officer_client, campaign), "cap:identifier") == first
    OperatorFactory()
    campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Teks yang diperbaiki."})
    campaign_submit(campaign=campaign, actor=campaign.author)
    approver = UserFactory(role=Role.APPROVER)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    second = _export(officer_client, campaign)
    assert _find(second, "cap:info/cap:description") == ["Teks yang diperbaiki."]
    assert _find(second, "cap:identifier") != first


def _approve_again(campaign: Campaign, **changes) -> None:
    OperatorFactory()
    campaign_update(campaign=campaign, actor=campaign.author, data=changes)
    campaign_submit(campaign=campaign, actor=campaign.author)
    approver = UserFactory(role=Role.APPROVER)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))


def _message(document) -> str:
    return ",".join(_find(document, f"cap:{name}")[0] for name in ("sender", "identifier", "sent"))


def test_a_reapproved_campaign_exports_an_update_superseding_its_earlier_alert_and_a_cancel_of_both(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign()
    first = _export(officer_client, campaign)
    _approve_again(campaign, text="Teks yang diperbaiki.")
    second = _export(officer_client, campaign)
    assert _find(second, "cap:msgType") == ["Update"]
    assert _find(second, "cap:references") == [_message(first)]
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    cancel = _export(officer_client, campaign)
    assert _find(cancel, "cap:msgType") == ["Cancel"]
    assert _find(cancel, "cap:references") == [f"{_message(first)} {_message(second)}"]


def test_references_name_earlier_alerts_as_they_were_sent_when_the_area_moved_to_another_zone(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    AreaFactory(code="94", name="Papua Tengah")
    campaign = broadcast_campaign()
    campaign.approvals.update(snapshot=campaign_content(campaign))
    first = _export(officer_client, campaign)
    assert _find(first, "cap:sent")[0].endswith("+07:00")
    _approve_again(campaign, area_codes=["94"])
    second = _export(officer_client, campaign)
    assert _find(second, "cap:sent")[0].endswith("+09:00")
    assert _find(second, "cap:references") == [_message(first)]
    campaign_update(campaign=campaign, actor=campaign.author, data={"area_codes": ["35.05"]})
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    cancel = _export(officer_client, campaign)
    assert _find(cancel, "cap:references") == [f"{_message(first)} {_message(second)}"]


def test_a_campaign_cancelled_after_an_unapproved_edit_exports_a_cancel_without_the_unapproved_text(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign()
    alert = _export(officer_client, campaign)
    campaign_update(campaign=campaign, actor=campaign.author, data={"text": "Teks yang belum disetujui."})
    campaign_cancel(campaign=campaign, actor=campaign.author, reason="Salah wilayah")
    cancel = _export(officer_client, campaign)
    assert _find(cancel, "cap:msgType") == ["Cancel"]
    assert _find(cancel, "cap:references") == [_message(alert)]
    assert _find(cancel, "cap:info") == []
    assert b"belum disetujui" not in etree.tostring(cancel)


def test_an_approved_targeted_campaign_exports_too(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(mode="targeted", starts_at=None, ends_at=None)
    document = _export(officer_client, campaign)
    assert _find(document, "cap:msgType") == ["Alert"]
    assert len(_find(document, "cap:info/cap:expires")) == 1


def test_a_targeted_campaign_for_a_later_day_exports_an_alert_in_force_from_its_send_time_in_wita(officer_client):
    from zoneinfo import ZoneInfo

    AreaFactory(code="73", name="Sulawesi Selatan")
    AreaFactory(code="73.71", name="Kota Makassar")
    at = (timezone.now() + timedelta(days=3)).astimezone(ZoneInfo("Asia/Makassar")).replace(second=0, microsecond=0)
    campaign = broadcast_campaign(
        mode="targeted",
        area_codes=["73.71"],
        starts_at=None,
        ends_at=None,
        schedule={"kind": "once", "at": at.replace(tzinfo=None).isoformat(timespec="minutes")},
        validity_minutes=6 * 60,
    )
    document = _export(officer_client, campaign)
    assert _find(document, "cap:info/cap:effective") == [at.isoformat()]
    assert _find(document, "cap:info/cap:expires") == [(at + timedelta(hours=6)).isoformat()]
    assert _find(document, "cap:info/cap:expires")[0].endswith("+08:00")


def test_a_recurring_targeted_campaign_exports_an_alert_in_force_until_its_last_run_expires_in_wit(officer_client):
    from zoneinfo import ZoneInfo

    AreaFactory(code="91", name="Papua")
    AreaFactory(code="91.71", name="Kota Jayapura")
    jayapura = ZoneInfo("Asia/Jayapura")
    tomorrow = (timezone.now() + timedelta(days=1)).astimezone(jayapura).date()
    until = tomorrow + timedelta(days=30)
    campaign = broadcast_campaign(
        mode="targeted",
        area_codes=["91.71"],
        starts_at=None,
        ends_at=None,
        schedule={"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}, "until": until.isoformat()},
        validity_minutes=60,
    )
    document = _export(officer_client, campaign)
    last_clock = "10:00" if until.weekday() == 4 else "13:00"
    last_run = datetime.fromisoformat(f"{until.isoformat()}T{last_clock}").replace(tzinfo=jayapura)
    assert _find(document, "cap:info/cap:expires") == [(last_run + timedelta(hours=1)).isoformat()]
    first = datetime.fromisoformat(_find(document, "cap:info/cap:effective")[0])
    assert first.utcoffset() == timedelta(hours=9)
    assert timezone.now() < first <= timezone.now() + timedelta(days=1)


def test_a_targeted_campaign_sent_now_hours_after_its_approval_exports_an_alert_in_force_until_its_run_expires(
    officer_client,
):
    from campaigns import dispatch

    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(
        mode="targeted",
        starts_at=None,
        ends_at=None,
        schedule={"kind": "now"},
        validity_minutes=60,
        author=officer_client.user,
    )
    # Approved in the morning, started by its officer five hours later.
    campaign.approvals.update(created_at=timezone.now() - timedelta(hours=5))
    response = officer_client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 200, response.content
    dispatch.runs_start_due(now=timezone.now())
    run = campaign.runs.get()

    sending = _export(officer_client, campaign)

    expires = datetime.fromisoformat(_find(sending, "cap:info/cap:expires")[0])
    assert expires == run.expires_at.replace(microsecond=0)
    assert expires > timezone.now()
    assert _find(sending, "cap:info/cap:expires")[0].endswith("+07:00")


def test_a_daily_campaign_started_days_after_its_approval_exports_an_alert_in_force_from_its_first_run(
    officer_client,
):
    from campaigns import dispatch

    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(
        mode="targeted",
        starts_at=None,
        ends_at=None,
        schedule={"kind": "daily", "time": "13:00"},
        validity_minutes=60,
        author=officer_client.user,
    )
    # Approved three days ago; its officer starts the schedule only now.
    campaign.approvals.update(created_at=timezone.now() - timedelta(days=3))
    response = officer_client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {}, format="json")
    assert response.status_code == 200, response.content
    campaign.refresh_from_db()

    armed = _export(officer_client, campaign)

    effective = datetime.fromisoformat(_find(armed, "cap:info/cap:effective")[0])
    assert effective == campaign.next_run_at
    assert _find(armed, "cap:info/cap:effective")[0].endswith("T13:00:00+07:00")

    dispatch.runs_start_due(now=campaign.next_run_at)
    sending = _export(officer_client, campaign)
    assert _find(sending, "cap:info/cap:effective") == _find(armed, "cap:info/cap:effective")


def test_control_characters_in_the_text_still_export_a_valid_alert(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(
        text="Info Covid-19\x0cHalaman 2", title="Info\x01 Covid", instruction="Pakai\x1b masker"
    )
    document = _export(officer_client, campaign)
    assert _find(document, "cap:info/cap:description") == ["Info Covid-19\nHalaman 2"]
    assert _find(document, "cap:info/cap:headline") == ["Info Covid"]
    assert _find(document, "cap:info/cap:instruction") == ["Pakai masker"]


def test_a_campaign_without_approval_cannot_be_exported_and_the_schema_documents_the_409(officer_client):
    from tests.schema_check import answer_mismatches

    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(approved=False)
    assert officer_client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml").status_code == 409
    from_browser = officer_client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml", HTTP_ACCEPT="text/html")
    assert from_browser.status_code == 409
    assert from_browser["Content-Type"].startswith("application/json") and from_browser.json()["detail"]
    schema = officer_client.get("/api/v1/schema/", {"format": "json"}).json()
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/cap.xml", "get", from_browser) == []


def test_a_campaign_whose_cap_fields_changed_after_approval_cannot_be_exported(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign()
    _export(officer_client, campaign)
    # Written past the services (as a migration or the shell could): the approval no longer matches.
    Campaign.objects.filter(pk=campaign.pk).update(instruction="Abaikan peringatan ini.")
    response = officer_client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml")
    assert response.status_code == 409
    assert "new approval" in response.json()["detail"]


# --- import: documents in the styles agencies publish --------------------------------------

BMKG_POLYGON = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>CJI20210714150000</identifier>
  <sender>bmkg@bmkg.go.id</sender>
  <sent>2021-07-14T15:00:00+07:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>en-US</language>
    <category>Met</category>
    <event>Heavy rain</event>
    <urgency>Immediate</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>
    <headline>Heavy rain warning for Blitar</headline>
    <description>Heavy rain with lightning is expected.</description>
    <area><areaDesc>Blitar</areaDesc><polygon>{polygon}</polygon></area>
  </info>
  <info>
    <language>id-ID</language>
    <category>Met</category>
    <event>Hujan Lebat</event>
    <urgency>Immediate</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>
    <expires>2099-07-14T18:00:00+07:00</expires>
    <senderName>BMKG</senderName>
    <headline>Peringatan dini hujan lebat di Kab. Blitar</headline>
    <description>
      Hujan lebat disertai kilat dan angin kencang
      berpotensi terjadi di sebagian wilayah Kab. Blitar.
    </description>
    <instruction>Waspadai banjir dan tanah longsor.</instruction>
    <area><areaDesc>Kab. Blitar bagian barat</areaDesc><polygon>{polygon}</polygon></area>
  </info>
  <Signature xmlns="http://www.w3.org/2000/09/xmldsig#">
    <SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></SignedInfo>
    <SignatureValue>ZmFrZS1idXQtd2VsbC1mb3JtZWQ=</SignatureValue>
  </Signature>
</alert>
"""

CIRCLE_11 = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.1">
  <identifier>bmkg-gempa-20210410141800</identifier>
  <sender>inatews@bmkg.go.id</sender>
  <sent>2021-04-10T14:18:00+07:00</sent>
  <status>Exercise</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>Geo</category>
    <event>Gempabumi</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>Gempa Mag:6.1, 10-Apr-21 14:00:16 WIB</headline>
    <area><areaDesc>90 km BaratDaya KAB-MALANG</areaDesc><circle>{circle} 30</circle></area>
  </info>
</alert>
"""

GEOCODES = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>satgas-covid-35-0001</identifier>
  <sender>satgas@jatimprov.go.id</sender>
  <sent>2021-07-01T09:00:00+07:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>id</language>
    <category>Health</category>
    <event>PPKM Darurat</event>
    <urgency>Expected</urgency>
    <severity>Minor</severity>
    <certainty>Likely</certainty>
    <headline>PPKM Darurat berlaku</headline>
    <description>{description}</description>
    <instruction>Tetap di rumah, pakai masker dua lapis, hindari kerumunan.</instruction>
    <area>
      <areaDesc>Kab. Blitar dan Kec. 1</areaDesc>
      <geocode><valueName>BPS</valueName><value>3505</value></geocode>
      <geocode><valueName>KEMENDAGRI</valueName><value>35.05.01</value></geocode>
      <geocode><valueName>SAME</valueName><value>006113</value></geocode>
    </area>
  </info>
</alert>
"""

CANCEL = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>satgas-covid-35-0001-cancel</identifier>
  <sender>satgas@jatimprov.go.id</sender>
  <sent>2021-07-01T10:00:00+07:00</sent>
  <status>Actual</status>
  <msgType>Cancel</msgType>
  <scope>Public</scope>
  <references>satgas@jatimprov.go.id,satgas-covid-35-0001,2021-07-01T09:00:00+07:00</references>
</alert>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&secret;</identifier></alert>
"""


def _blitar_west_polygon() -> str:
    """A CAP polygon over the western third of Kab. Blitar."""
    minx, miny, maxx, maxy = shape(regency_boundary("35.05")).bounds
    west = minx + (maxx - minx) / 3
    ring = [(miny, minx), (miny, west), (maxy, west), (maxy, minx), (miny, minx)]
    return " ".join(f"{lat:.5f},{lon:.5f}" for lat, lon in ring)


def _post_xml(client, document: str, content_type: str = "application/cap+xml", **extra):
    return client.generic("POST", IMPORT_URL, document.encode(), content_type=content_type, **extra)


def test_a_polygon_alert_with_languages_and_a_signature_becomes_an_indonesian_draft(officer_client):
    blitar_areas()
    response = _post_xml(officer_client, BMKG_POLYGON.format(polygon=_blitar_west_polygon()))
    assert response.status_code == 201, response.json()
    body = response.json()
    campaign = Campaign.objects.get(pk=body["campaign_id"])
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.author == officer_client.user
    assert campaign.mode == "area_broadcast"
    assert campaign.area_codes == ["35.05"]  # no kecamatan boundaries loaded: the whole regency
    assert campaign.text.startswith("Peringatan dini hujan lebat di Kab. Blitar Hujan lebat disertai kilat")
    assert "  " not in campaign.text and "\n" not in campaign.text
    assert campaign.priority == Priority.URGENT  # urgency Immediate
    assert (campaign.cap_source_identifier, campaign.cap_source_sender) == ("CJI20210714150000", "bmkg@bmkg.go.id")
    assert campaign.cap_category == "Met" and campaign.instruction == "Waspadai banjir dan tanah longsor."
    assert any("signature" in note for note in body["notes"])
    assert AuditEvent.objects.filter(action="campaign.cap_import", object_id=str(campaign.pk)).exists()


def test_the_approver_sees_the_alerts_issuer_its_unverified_signature_and_what_was_cut(officer_client):
    blitar_areas()
    settings_row = BroadcastSettings.load()
    settings_row.max_import_segments = 1
    settings_row.save()
    response = _post_xml(officer_client, BMKG_POLYGON.format(polygon=_blitar_west_polygon()))
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PENDING_APPROVAL)
    approver = UserFactory(role=Role.APPROVER)

    page = client_for(approver).get(f"/campaigns/{campaign.pk}/review/").content.decode()

    assert "Sumber: peringatan CAP" in page
    assert "Diimpor dari peringatan CAP “CJI20210714150000” dari bmkg@bmkg.go.id." in page
    assert "tanda tangan XML yang tidak diverifikasi" in page
    assert "Instruksi kehilangan 3 kata agar muat." in page  # "Waspadai banjir..." of five words
    composed = CampaignFactory(author=officer_client.user, status=Campaign.Status.PENDING_APPROVAL)
    assert "data-cap-source" not in client_for(approver).get(f"/campaigns/{composed.pk}/review/").content.decode()


def test_an_indonesian_info_block_without_an_area_takes_the_area_of_another_block(officer_client):
    blitar_areas()
    document = BMKG_POLYGON.format(polygon=_blitar_west_polygon())
    document = document.replace("<area><areaDesc>Kab. Blitar bagian barat</areaDesc>", "<!--").replace(
        "</area>\n  </info>\n  <Signature", "-->\n  </info>\n  <Signature"
    )
    assert document.count("<area>") == 1
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["area_codes"] == ["35.05"]
    assert body["text"].startswith("Peringatan dini hujan lebat")
    assert any("names no area" in note for note in body["notes"])


def test_a_cap_11_circle_as_a_multipart_file_becomes_an_exercise_draft(officer_client):
    blitar_areas()
    centre = shape(regency_boundary("35.05")).centroid
    document = CIRCLE_11.format(circle=f"{centre.y:.4f},{centre.x:.4f}")
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("gempa.xml", document.encode(), content_type="application/xml")
    response = officer_client.post(IMPORT_URL, {"file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert campaign.exercise is True
    assert campaign.area_codes == ["35.05"]
    assert campaign.priority == Priority.URGENT  # severity Severe
    assert any("No Indonesian info block" in note for note in response.json()["notes"])


def test_a_multipart_import_sent_as_the_schema_documents_it_becomes_a_draft(officer_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    schema = officer_client.get("/api/v1/schema/", {"format": "json"}).json()
    form = schema["paths"][IMPORT_URL]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["type"] == "object" and form["required"] == ["file"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary", "description": "The CAP document."}
    blitar_areas()
    upload = SimpleUploadedFile("alert.xml", GEOCODES.format(description="Mulai.").encode(), "application/xml")

    response = officer_client.post(IMPORT_URL, {form["required"][0]: upload}, format="multipart")

    assert response.status_code == 201, response.json()


def test_geocodes_matching_kemendagri_codes_set_the_area_whatever_their_value_name(officer_client):
    blitar_areas()
    response = _post_xml(officer_client, GEOCODES.format(description="Mulai 3 Juli 2021."))
    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert campaign.area_codes == ["35.05", "35.05.01"]
    assert campaign.priority == Priority.NORMAL
    assert campaign.text == "PPKM Darurat berlaku Mulai 3 Juli 2021. " + (
        "Tetap di rumah, pakai masker dua lapis, hindari kerumunan."
    )
    assert response.json()["cut"] == []


def test_a_long_alert_is_cut_to_the_configured_segments_and_says_what_was_cut(officer_client):
    blitar_areas()
    settings_row = BroadcastSettings.load()
    settings_row.max_import_segments = 1
    settings_row.save()
    long_description = " ".join(["Pembatasan kegiatan masyarakat berlaku di seluruh kabupaten."] * 6)
    response = _post_xml(officer_client, GEOCODES.format(description=long_description))
    assert response.status_code == 201
    body = response.json()
    assert len(body["text"]) <= 160 and body["text"].endswith("...")
    assert [cut["part"] for cut in body["cut"]] == ["description", "instruction"]
    assert body["cut"][1]["kept_words"] == 0
    assert any("Text cut to fit 1 SMS segments" in note for note in body["notes"])


def test_a_cancel_rejects_a_draft_waiting_for_approval_and_cancels_one_that_is_approved(officer_client):
    blitar_areas()
    OperatorFactory(slug="telkomsel")
    created = _post_xml(officer_client, GEOCODES.format(description="Mulai 3 Juli 2021.")).json()
    campaign = Campaign.objects.get(pk=created["campaign_id"])
    campaign_submit(campaign=campaign, actor=officer_client.user)
    response = _post_xml(officer_client, CANCEL)
    assert response.status_code == 200, response.json()
    assert response.json()["action"] == "rejected"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.REJECTED

    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.APPROVED)
    response = _post_xml(officer_client, CANCEL)
    assert response.json()["action"] == "cancelled"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    # A Cancel for an alert never imported, or already final, changes nothing.
    assert _post_xml(officer_client, CANCEL).status_code == 409
    assert _post_xml(officer_client, CANCEL.replace("satgas-covid-35-0001,", "other,")).status_code == 400


def test_a_cancel_naming_an_alert_and_its_update_withdraws_the_campaigns_of_both(officer_client):
    original = _import_geocoded_alert(officer_client)
    update = GEOCODES.format(description="Diperpanjang sampai 20 Juli 2021.").replace(
        "<identifier>satgas-covid-35-0001</identifier>", "<identifier>satgas-covid-35-0002</identifier>"
    )
    update = update.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>").replace(
        "<scope>Public</scope>",
        "<scope>Public</scope><references>satgas@jatimprov.go.id,satgas-covid-35-0001,2021-07-01T09:00:00+07:00"
        "</references>",
    )
    created = _post_xml(officer_client, update)
    assert created.status_code == 201, created.json()
    updated = Campaign.objects.get(pk=created.json()["campaign_id"])
    Campaign.objects.filter(pk__in=[original.pk, updated.pk]).update(status=Campaign.Status.APPROVED)
    cancel = CANCEL.replace(
        "</references>", " satgas@jatimprov.go.id,satgas-covid-35-0002,2021-07-02T09:00:00+07:00</references>"
    )
    response = _post_xml(officer_client, cancel)
    assert response.status_code == 200, response.json()
    original.refresh_from_db()
    updated.refresh_from_db()
    assert (original.status, updated.status) == (Campaign.Status.CANCELLED, Campaign.Status.CANCELLED)


def _update_of_the_geocoded_alert() -> str:
    update = GEOCODES.format(description="Diperpanjang sampai 20 Juli 2021.").replace(
        "<identifier>satgas-covid-35-0001</identifier>", "<identifier>satgas-covid-35-0002</identifier>"
    )
    return update.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>").replace(
        "<scope>Public</scope>",
        "<scope>Public</scope><references>satgas@jatimprov.go.id,satgas-covid-35-0001,2021-07-01T09:00:00+07:00"
        "</references>",
    )


def test_a_cancel_naming_only_the_latest_update_also_withdraws_the_alert_it_updated(officer_client):
    original = _import_geocoded_alert(officer_client)
    created = _post_xml(officer_client, _update_of_the_geocoded_alert())
    assert created.status_code == 201, created.json()
    updated = Campaign.objects.get(pk=created.json()["campaign_id"])
    Campaign.objects.filter(pk__in=[original.pk, updated.pk]).update(status=Campaign.Status.APPROVED)
    cancel = CANCEL.replace("satgas-covid-35-0001,2021-07-01T09", "satgas-covid-35-0002,2021-07-02T09")
    response = _post_xml(officer_client, cancel)
    assert response.status_code == 200, response.json()
    original.refresh_from_db()
    updated.refresh_from_db()
    assert (original.status, updated.status) == (Campaign.Status.CANCELLED, Campaign.Status.CANCELLED)


def test_an_alert_imported_again_is_refused_and_names_the_campaign_it_became(officer_client):
    campaign = _import_geocoded_alert(officer_client)
    events_before = AuditEvent.objects.count()
    for document in (GEOCODES.format(description="Mulai 3 Juli 2021."), GEOCODES.format(description="Lain.")):
        response = _post_xml(officer_client, document)
        assert response.status_code == 409
        assert f"already imported as campaign {campaign.pk}" in response.json()["detail"]
    assert Campaign.objects.count() == 1
    assert AuditEvent.objects.count() == events_before


def test_an_alert_imported_by_a_request_that_passed_the_check_meanwhile_is_refused_and_creates_nothing(
    officer_client,
):
    # Two requests posting one alert at once both find no earlier import; the second to write must lose.
    document = GEOCODES.format(description="Mulai 3 Juli 2021.")
    campaign = _import_geocoded_alert(officer_client)
    events_before = AuditEvent.objects.count()
    with pytest.raises(ServiceConflict, match="imported"):
        _cap_create(cap_parse(document.encode()), actor=officer_client.user, now=timezone.now())
    assert list(Campaign.objects.values_list("pk", flat=True)) == [campaign.pk]
    assert AuditEvent.objects.count() == events_before


def test_an_alert_imported_in_another_jurisdiction_is_refused_without_naming_its_campaign(
    officer_client, api_client_for
):
    # The officer of a kecamatan within the regency whose officer imported the alert cannot see that campaign.
    campaign = _import_geocoded_alert(api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")))
    kecamatan = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05.01")
    response = _post_xml(api_client_for(kecamatan), GEOCODES.format(description="Mulai 3 Juli 2021."))
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "already imported" in detail
    assert str(campaign.pk) not in detail and campaign.status not in detail
    assert Campaign.objects.count() == 1


TWO_REGENCIES = GEOCODES.replace(
    "<geocode><valueName>SAME</valueName><value>006113</value></geocode>",
    "<geocode><valueName>KEMENDAGRI</valueName><value>35.04</value></geocode>",
)


@pytest.fixture
def cap_world(db):
    """Kab. Blitar with its kecamatan under Jawa Timur, and an operator to broadcast through."""
    blitar_areas()
    OperatorFactory(slug="telkomsel")


def _tulungagung_officer():
    AreaFactory(code="35.04", name="Kabupaten Tulungagung")
    return UserFactory(role=Role.OFFICER, jurisdiction_id="35.04")


def test_an_alert_for_two_regencies_is_imported_by_each_regencys_officer_for_its_own_part(cap_world, api_client_for):
    tulungagung = _tulungagung_officer()
    blitar = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    first = _post_xml(api_client_for(blitar), TWO_REGENCIES.format(description="Mulai 3 Juli 2021."))
    assert first.status_code == 201, first.json()
    assert (
        "Left out, outside your jurisdiction (35.05 Kabupaten Blitar): 35.04 Kabupaten Tulungagung."
        in first.json()["notes"]
    )
    second = _post_xml(api_client_for(tulungagung), TWO_REGENCIES.format(description="Mulai 3 Juli 2021."))
    assert second.status_code == 201, second.json()
    assert any("35.05 Kabupaten Blitar" in note for note in second.json()["notes"])
    blitar_campaign = Campaign.objects.get(pk=first.json()["campaign_id"])
    tulungagung_campaign = Campaign.objects.get(pk=second.json()["campaign_id"])
    assert blitar_campaign.area_codes == ["35.05", "35.05.01"]
    assert tulungagung_campaign.area_codes == ["35.04"]
    assert (tulungagung_campaign.author, tulungagung_campaign.area_scope) == (tulungagung, "35.04")
    event = AuditEvent.objects.get(action="campaign.cap_import", object_id=str(blitar_campaign.pk))
    assert event.details["narrowed"] == [
        "Left out, outside your jurisdiction (35.05 Kabupaten Blitar): 35.04 Kabupaten Tulungagung."
    ]
    # Posted again in either regency, it is the same alert for the same handsets.
    again = _post_xml(api_client_for(blitar), TWO_REGENCIES.format(description="Mulai 3 Juli 2021."))
    assert again.status_code == 409
    assert f"campaign {blitar_campaign.pk}" in again.json()["detail"]
    assert Campaign.objects.count() == 2


def test_an_alert_with_an_indonesian_info_block_per_regency_is_imported_from_the_block_of_the_officers_own(
    cap_world, api_client_for
):
    alert = GEOCODES.format(description="Mulai 3 Juli 2021.")
    blitar_block = alert[alert.index("<info>") : alert.index("</info>") + len("</info>")]
    tulungagung_block = (
        blitar_block.replace("PPKM Darurat berlaku", "PPKM Level 3 di Tulungagung")
        .replace("<value>3505</value>", "<value>3504</value>")
        .replace("<value>35.05.01</value>", "<value>35.04</value>")
    )
    alert = alert.replace(blitar_block, blitar_block + tulungagung_block)
    response = _post_xml(api_client_for(_tulungagung_officer()), alert)
    assert response.status_code == 201, response.json()
    assert response.json()["area_codes"] == ["35.04"]
    assert response.json()["title"] == "PPKM Level 3 di Tulungagung"
    assert any("info block whose area reaches your jurisdiction" in note for note in response.json()["notes"])


def test_an_alert_for_the_province_is_narrowed_to_the_regency_officers_jurisdiction(cap_world, api_client_for):
    province_wide = GEOCODES.replace("<value>3505</value>", "<value>35</value>").replace(
        "<value>35.05.01</value>", "<value>35</value>"
    )
    blitar = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    response = _post_xml(api_client_for(blitar), province_wide.format(description="Mulai 3 Juli 2021."))
    assert response.status_code == 201, response.json()
    assert (
        "The alert's area 35 Jawa Timur was narrowed to your jurisdiction, 35.05 Kabupaten Blitar."
        in response.json()["notes"]
    )
    assert Campaign.objects.get(pk=response.json()["campaign_id"]).area_codes == ["35.05"]


def test_an_alert_wholly_outside_the_officers_jurisdiction_is_refused_naming_its_areas(cap_world, api_client_for):
    response = _post_xml(api_client_for(_tulungagung_officer()), GEOCODES.format(description="Mulai 3 Juli 2021."))
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "outside your jurisdiction (35.04 Kabupaten Tulungagung): 35.05 Kabupaten Blitar, 35.05.01 Kecamatan 1" in (
        detail
    )
    assert not Campaign.objects.exists()
    assert not AuditEvent.objects.filter(action="campaign.cap_import").exists()


def test_an_alert_imported_for_the_regencies_is_not_imported_again_for_the_province_and_one_cancel_ends_both(
    cap_world, api_client_for
):
    tulungagung = _tulungagung_officer()
    blitar = UserFactory(role=Role.OFFICER, jurisdiction_id="35.05")
    for officer in (blitar, tulungagung):
        assert _post_xml(api_client_for(officer), TWO_REGENCIES.format(description="x")).status_code == 201
    province = api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35"))
    response = _post_xml(province, TWO_REGENCIES.format(description="x"))
    assert response.status_code == 409
    assert "already imported as campaign" in response.json()["detail"]  # the province sees its regencies' campaigns
    assert Campaign.objects.count() == 2
    cancelled = _post_xml(province, CANCEL)
    assert cancelled.status_code == 200, cancelled.json()
    assert set(Campaign.objects.values_list("status", flat=True)) == {Campaign.Status.CANCELLED}


def _import_geocoded_alert(client) -> Campaign:
    blitar_areas()
    OperatorFactory(slug="telkomsel")
    created = _post_xml(client, GEOCODES.format(description="Mulai 3 Juli 2021."))
    assert created.status_code == 201, created.json()
    return Campaign.objects.get(pk=created.json()["campaign_id"])


def test_another_officers_cap_cancel_cancels_the_imported_campaign(officer_client, api_client_for):
    campaign = _import_geocoded_alert(officer_client)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.APPROVED)
    other = UserFactory(role=Role.OFFICER)
    response = _post_xml(api_client_for(other), CANCEL)
    assert response.status_code == 200, response.json()
    assert response.json()["action"] == "cancelled"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.CANCELLED
    event = AuditEvent.objects.get(action="campaign.cancel", object_id=str(campaign.pk))
    assert event.actor == other
    assert event.details["reason"].startswith("Withdrawn by the issuer (CAP Cancel satgas-covid-35-0001-cancel")


def test_a_cap_cancel_imported_by_an_officer_of_another_jurisdiction_withdraws_nothing(officer_client, api_client_for):
    campaign = _import_geocoded_alert(officer_client)
    AreaFactory(code="33", name="Jawa Tengah")
    AreaFactory(code="33.16", name="Kabupaten Blora")
    blora = UserFactory(role=Role.OFFICER, jurisdiction_id="33.16")
    response = _post_xml(api_client_for(blora), CANCEL)
    assert response.status_code == 400
    assert "references no imported alert" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    jatim = UserFactory(role=Role.OFFICER, jurisdiction_id="35")
    assert _post_xml(api_client_for(jatim), CANCEL).json()["action"] == "cancelled"


def test_another_officers_cap_cancel_rejects_a_campaign_pending_approval_with_an_approval_row(
    officer_client, api_client_for
):
    campaign = _import_geocoded_alert(officer_client)
    campaign_submit(campaign=campaign, actor=officer_client.user)
    other = UserFactory(role=Role.OFFICER)
    response = _post_xml(api_client_for(other), CANCEL)
    assert response.status_code == 200, response.json()
    assert response.json()["action"] == "rejected"
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.REJECTED
    approval = Approval.objects.get(campaign=campaign)
    assert approval.decision == Approval.Decision.REJECTED
    assert approval.approver == other
    assert approval.reason.startswith("Withdrawn by the issuer (CAP Cancel satgas-covid-35-0001-cancel")
    event = AuditEvent.objects.get(action="campaign.reject", object_id=str(campaign.pk))
    assert event.actor == other
    assert (event.from_state, event.to_state) == (Campaign.Status.PENDING_APPROVAL, Campaign.Status.REJECTED)
    assert event.details["approval_id"] == approval.pk


def test_a_cap_cancel_naming_no_imported_alert_is_refused_and_changes_nothing(officer_client, api_client_for):
    campaign = _import_geocoded_alert(officer_client)
    campaign_submit(campaign=campaign, actor=officer_client.user)
    other_client = api_client_for(UserFactory(role=Role.OFFICER))
    events_before = AuditEvent.objects.count()
    unrelated = CANCEL.replace("satgas-covid-35-0001,", "satgas-covid-35-0999,")
    response = _post_xml(other_client, unrelated)
    assert response.status_code == 400
    assert "references no imported alert" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL
    assert not Approval.objects.filter(campaign=campaign).exists()
    assert AuditEvent.objects.count() == events_before


def test_withdrawal_by_issuer_is_refused_for_a_campaign_not_imported_from_the_named_alert(officer_client):
    campaign = _import_geocoded_alert(officer_client)
    with pytest.raises(ServiceForbidden):
        campaign_withdraw_by_issuer(
            campaign=campaign,
            actor=UserFactory(role=Role.OFFICER),
            reason="Withdrawn by the issuer.",
            references=[("satgas@jatimprov.go.id", "another-alert")],
        )
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_an_exported_alert_imports_back_into_the_same_area(officer_client):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    exported = officer_client.get(f"/api/v1/campaigns/{broadcast_campaign().pk}/cap.xml").content.decode()
    response = _post_xml(officer_client, exported, content_type="application/xml")
    assert response.status_code == 201, response.json()
    assert response.json()["area_codes"] == ["35.05"]


# --- import: documents that must be refused --------------------------------------------------


@pytest.mark.parametrize(
    "document, reason",
    [
        (BILLION_LAUGHS, "DTD or entities"),
        (EXTERNAL_ENTITY, "DTD or entities"),
        ("<alert><identifier>unterminated", "not well-formed"),
        ('<rss version="2.0"><channel><title>Berita</title></channel></rss>', "Not a CAP alert"),
        ("<alert><identifier>x</identifier></alert>", "Not a CAP alert"),  # no namespace
        (GEOCODES.replace("<status>Actual", "<status>Test"), "status 'Test'"),
        # Meant for responders or named addresses only, never for every handset in the area.
        (GEOCODES.replace("Public</scope>", "Restricted</scope><restriction>BPBD only</restriction>"), "scope"),
        (GEOCODES.replace("Public</scope>", "Private</scope><addresses>bpbd@blitarkab.go.id</addresses>"), "scope"),
        # CAP requires a scope: without one, nothing says its issuer meant it for the public.
        (GEOCODES.replace("<scope>Public</scope>", "<restriction>BPBD only</restriction>"), "names no scope"),
        ("", "no document"),
        (GEOCODES.replace("<identifier>satgas-covid-35-0001</identifier>", ""), "missing identifier"),
        (GEOCODES.replace("<msgType>Alert", "<msgType>Ack"), "msgType 'Ack' carries no alert"),
        (re.sub(r"<info>.*</info>", "", GEOCODES, flags=re.S), "no info block"),
        (
            re.sub(r"<(headline|description|instruction)>[^<]*</\1>", "", GEOCODES),
            "no headline, description or instruction",
        ),
        (re.sub(r"<references>[^<]*</references>", "", CANCEL), "no references"),
    ],
)
def test_unusable_documents_are_refused_with_a_reason_and_create_nothing(officer_client, document, reason):
    blitar_areas()
    response = _post_xml(officer_client, document.format(description="x") if "{" in document else document)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("encoding", ["bogus", "Shift_JIS", "base64", "idna"])
def test_a_document_in_an_encoding_the_parser_cannot_read_is_refused_with_a_reason(officer_client, encoding):
    blitar_areas()
    document = GEOCODES.format(description="Mulai 3 Juli 2021.").replace('encoding="UTF-8"', f'encoding="{encoding}"')
    response = _post_xml(officer_client, document)
    assert response.status_code == 400
    assert "encoding" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_alert_naming_more_areas_than_a_campaign_holds_is_refused_and_creates_nothing(officer_client):
    blitar_areas()
    villages = [f"35.05.01.{2001 + number}" for number in range(MAX_AREA_CODES + 1)]
    Area.objects.bulk_create(
        [Area(code=code, name=code, level=AreaLevel.DESA, parent_id="35.05.01") for code in villages]
    )
    geocodes = "".join(f"<geocode><valueName>BPS</valueName><value>{code}</value></geocode>" for code in villages)
    document = GEOCODES.format(description="x").replace("<value>3505</value>", "<value>9999</value>")
    response = _post_xml(officer_client, document.replace("<geocode>", geocodes + "<geocode>", 1))
    assert response.status_code == 400, response.json()
    assert f"At most {MAX_AREA_CODES} areas" in response.json()["detail"]
    page = client_for(officer_client.user).post(
        "/campaigns/import-cap/", {"document": document.replace("<geocode>", geocodes + "<geocode>", 1)}
    )
    assert page.status_code == 400
    assert (
        f"Peringatan tidak diimpor: Satu kampanye paling banyak memuat {MAX_AREA_CODES} wilayah, sedangkan "
        f"&lt;geocode&gt; peringatan CAP ini menyebut {MAX_AREA_CODES + 2}"  # the villages and 35.05.01
    ) in page.content.decode()
    assert not Campaign.objects.exists()


def test_an_alert_drawing_its_area_with_more_shapes_than_are_read_is_refused_and_creates_nothing(officer_client):
    # Each circle costs a polygon of 65 points: a megabyte of them would hold a request for many seconds.
    blitar_areas()
    centre = shape(regency_boundary("35.05")).centroid
    circles = f"<circle>{centre.y:.4f},{centre.x:.4f} 1</circle>" * (MAX_AREA_SHAPES + 1)
    response = _post_xml(officer_client, CIRCLE_11.replace("<circle>{circle} 30</circle>", circles))
    assert response.status_code == 400, response.json()
    assert f"at most {MAX_AREA_SHAPES}" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_a_polygon_crossing_itself_in_many_places_is_skipped_and_said_so_while_the_others_are_read(officer_client):
    # Repairing a scribble of a few hundred points held the request for minutes and gigabytes.
    blitar_areas()
    rng = random.Random(7)
    minx, miny, maxx, maxy = shape(regency_boundary("35.05")).bounds
    ring = [(rng.uniform(miny, maxy), rng.uniform(minx, maxx)) for _ in range(150)]
    scribble = " ".join(f"{lat:.5f},{lon:.5f}" for lat, lon in [*ring, ring[0]])
    document = BMKG_POLYGON.format(polygon=_blitar_west_polygon()).replace(
        "</area>\n  </info>\n  <Signature", f"<polygon>{scribble}</polygon></area>\n  </info>\n  <Signature"
    )
    assert document.count("<polygon>") == 3

    response = _post_xml(officer_client, document)

    assert response.status_code == 201, response.json()
    assert response.json()["area_codes"] == ["35.05"]
    assert any("crosses itself in more than 100 places" in note for note in response.json()["notes"])


def test_an_alert_whose_area_matches_nothing_known_is_refused(officer_client):
    blitar_areas()
    far_away = GEOCODES.replace("<value>3505</value>", "<value>9999</value>").replace("35.05.01", "99.01.01")
    response = _post_xml(officer_client, far_away.format(description="x"))
    assert response.status_code == 400
    assert "no usable area" in response.json()["detail"]
    sea = BMKG_POLYGON.format(polygon="-20,100 -20,101 -21,101 -21,100 -20,100")
    assert _post_xml(officer_client, sea).status_code == 400
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("radius", ["inf", "nan"])
def test_a_circle_without_a_finite_radius_is_skipped_and_the_alert_refused(officer_client, radius):
    blitar_areas()
    centre = shape(regency_boundary("35.05")).centroid
    document = CIRCLE_11.format(circle=f"{centre.y:.4f},{centre.x:.4f}").replace(" 30</circle>", f" {radius}</circle>")
    response = _post_xml(officer_client, document)
    assert response.status_code == 400
    assert "no usable area" in response.json()["detail"]
    # The officer learns why the only shape was left out, not only that nothing was left.
    assert "Skipped a circle" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_alert_whose_only_circle_is_infinite_is_refused_with_400(officer_client):
    blitar_areas()
    no_codes = GEOCODES.replace("<value>3505</value>", "<value>9999</value>").replace("35.05.01", "99.01.01")
    circle = no_codes.replace("<geocode>", "<circle>-8.1,112.1 1e400</circle><geocode>", 1)
    response = _post_xml(officer_client, circle.format(description="x"))
    assert response.status_code == 400
    assert "no usable area" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_odd_cap_values_and_times_import_with_defaults_instead_of_failing(officer_client):
    blitar_areas()
    odd = (
        GEOCODES.replace("<category>Health", "<category>" + "H" * 40)
        .replace("<urgency>Expected", "<urgency>" + "U" * 40)
        .replace("<severity>Minor", "<severity>" + "S" * 40)
        .replace("<certainty>Likely", "<certainty>" + "C" * 40)
        .replace("<urgency>", "<onset>9999-12-31T23:59:59-14:00</onset><urgency>")
    )
    response = _post_xml(officer_client, odd.format(description="x"))
    assert response.status_code == 201, response.content
    campaign = Campaign.objects.get(pk=response.json()["campaign_id"])
    assert (campaign.cap_category, campaign.cap_urgency, campaign.cap_severity, campaign.cap_certainty) == (
        "Other",
        "",
        "",
        "",
    )
    assert campaign.ends_at - campaign.starts_at == DEFAULT_WINDOW


def test_only_officers_may_import(db, api_client_for):
    approver = UserFactory(role=Role.APPROVER)
    assert _post_xml(api_client_for(approver), CANCEL).status_code == 403


# --- pure pieces ---------------------------------------------------------------------------


def test_the_indonesian_info_block_is_picked_and_repeated_parts_are_not_sent_twice():
    alert = cap_parse(BMKG_POLYGON.format(polygon="-8,112 -8,112.1 -8.1,112.1 -8,112").encode())
    assert alert.version == "1.2" and alert.signed
    info = next(i for i in alert.infos if i.language == "id-ID")
    info.description = info.headline + " " + info.description
    text, cut = cap_fit_text(info, max_segments=3)
    assert text.count("Peringatan dini") == 1
    assert text.startswith(info.headline + " Hujan lebat")
    assert cut == []


def test_a_headline_that_leaves_no_room_keeps_no_word_of_what_follows_and_says_every_word_was_dropped():
    (info,) = cap_parse(GEOCODES.format(description="Mulai 3 Juli 2021 sampai 20 Juli.").encode()).infos
    info.headline = "PPKM Darurat berlaku di seluruh Kabupaten Blitar " + "x" * 105  # 155 of one SMS's 160
    text, cut = cap_fit_text(info, max_segments=1)
    assert text == info.headline
    assert cut == [
        {"part": "description", "kept_words": 0, "dropped_words": 7},
        {"part": "instruction", "kept_words": 0, "dropped_words": 9},
    ]


def test_a_document_over_the_size_limit_is_refused():
    with pytest.raises(ServiceInvalid, match="larger than"):
        cap_parse(b"<alert>" + b" " * (1024 * 1024 + 1) + b"</alert>")


def test_the_imported_window_leaves_time_for_review(officer_client):
    blitar_areas()
    before = timezone.now()
    body = _post_xml(officer_client, GEOCODES.format(description="x")).json()
    campaign = Campaign.objects.get(pk=body["campaign_id"])
    assert campaign.starts_at >= before + timedelta(minutes=14)
    assert timedelta(minutes=5) <= campaign.ends_at - campaign.starts_at <= timedelta(hours=24)


@pytest.mark.parametrize("expires_in", [timedelta(days=-1), timedelta(minutes=-1), timedelta(minutes=17)])
def test_an_alert_that_expires_before_a_window_could_follow_the_review_is_refused(officer_client, expires_in):
    blitar_areas()
    expires = (timezone.now() + expires_in).astimezone(timezone.get_fixed_timezone(7 * 60)).replace(microsecond=0)
    document = GEOCODES.format(description="x").replace(
        "<urgency>", f"<expires>{expires.isoformat()}</expires><urgency>"
    )
    response = _post_xml(officer_client, document)
    assert response.status_code == 400, response.json()
    assert "expire" in response.json()["detail"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(
    "element, value",
    [
        ("expires", "2021-07-01T18:00:00"),  # expired years ago, but without the offset CAP requires
        ("expires", "1 Juli 2021 18:00 WIB"),
        ("onset", "2099-07-01T06:00:00"),
        ("effective", "besok pagi"),
    ],
)
def test_an_alert_whose_time_is_not_a_cap_time_is_refused_naming_it_instead_of_sent_as_if_it_had_none(
    officer_client, element, value
):
    blitar_areas()
    document = GEOCODES.format(description="x").replace("<urgency>", f"<{element}>{value}</{element}><urgency>")
    response = _post_xml(officer_client, document)
    assert response.status_code == 400, response.json()
    assert f"{element} {value!r}" in response.json()["detail"]
    assert "+07:00" in response.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_alert_expiring_after_the_review_is_broadcast_until_it_expires(officer_client):
    blitar_areas()
    expires = (timezone.now() + timedelta(minutes=45)).replace(microsecond=0)
    document = GEOCODES.format(description="x").replace(
        "<urgency>", f"<expires>{expires.isoformat()}</expires><urgency>"
    )
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.json()
    assert Campaign.objects.get(pk=response.json()["campaign_id"]).ends_at == expires


def test_a_polygon_alert_imports_while_a_boundary_needing_repair_is_loaded(officer_client):
    blitar_areas()
    AreaFactory(code="52", name="Nusa Tenggara Barat")
    AreaFactory(code="52.71", name="Kota Mataram", boundary=regency_boundary("52.71"))
    response = _post_xml(officer_client, BMKG_POLYGON.format(polygon=_blitar_west_polygon()))
    assert response.status_code == 201, response.content
    assert Campaign.objects.get(pk=response.json()["campaign_id"]).area_codes == ["35.05"]


def test_a_small_circle_inside_a_large_regency_sets_that_regency_as_the_area(officer_client):
    # A 10 km circle near Merauke covers well under 1% of the regency, yet lies wholly in it.
    AreaFactory(code="93", name="Papua Selatan")
    AreaFactory(code="93.01", name="Kabupaten Merauke", boundary=regency_boundary("93.01"))
    document = CIRCLE_11.replace("{circle} 30", "-8.10,140.60 10")
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.json()
    assert Campaign.objects.get(pk=response.json()["campaign_id"]).area_codes == ["93.01"]


def test_the_cap_sender_is_the_configured_one_else_derived_from_the_public_host(settings, officer_client):
    from campaigns.cap import cap_sender

    settings.CAP_SENDER = ""
    settings.PUBLIC_BASE_URL = "https://sms.blitarkab.go.id"
    assert cap_sender() == "smsblast@sms.blitarkab.go.id"
    settings.CAP_SENDER = "bpbd@blitarkab.go.id"
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    document = _export(officer_client, broadcast_campaign(area_codes=["35.05"]))
    assert _find(document, "cap:sender") == ["bpbd@blitarkab.go.id"]
    assert _find(document, "cap:identifier")[0].startswith("blitarkab.go.id.campaign.")


def test_the_cap_sender_is_read_from_the_environment():
    import os
    import subprocess
    import sys

    from django.conf import settings as django_settings

    env = {**os.environ, "CAP_SENDER": "bpbd@blitarkab.go.id", "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.CAP_SENDER)",
        ],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout.strip() == "bpbd@blitarkab.go.id", shown.stderr


def test_import_answers_are_documented_field_by_field_created_cancelled_and_refused(officer_client):
    from tests.schema_check import answer_mismatches

    schema = officer_client.get("/api/v1/schema/", {"format": "json"}).json()
    blitar_areas()
    OperatorFactory(slug="telkomsel")
    answers = [_post_xml(officer_client, GEOCODES.format(description="Mulai 3 Juli 2021."))]
    answers.append(_post_xml(officer_client, CANCEL))
    answers.append(_post_xml(officer_client, CANCEL))
    answers.append(_post_xml(officer_client, "<x/>"))
    assert [answer.status_code for answer in answers] == [201, 200, 409, 400]
    for answer in answers:
        assert answer_mismatches(schema, IMPORT_URL, "post", answer) == []


def test_the_export_is_documented_as_a_cap_document(officer_client):
    from tests.schema_check import answer_mismatches

    schema = officer_client.get("/api/v1/schema/", {"format": "json"}).json()
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    campaign = broadcast_campaign(area_codes=["35.05"])
    answer = officer_client.get(f"/api/v1/campaigns/{campaign.pk}/cap.xml")
    assert answer.status_code == 200
    assert answer_mismatches(schema, "/api/v1/campaigns/{id}/cap.xml", "get", answer) == []


def test_approving_an_imported_update_cancels_the_campaigns_of_the_alerts_it_replaces(officer_client):
    blitar_areas()
    bmkg = "bmkg@bmkg.go.id"
    now = timezone.now()
    window = {"mode": "area_broadcast", "starts_at": now + timedelta(hours=1), "ends_at": now + timedelta(hours=3)}
    first = CampaignFactory(
        status=Campaign.Status.SCHEDULED, cap_source_sender=bmkg, cap_source_identifier="A1", **window
    )
    # A1 was updated by A2 before, so the update of A2 replaces both.
    second = CampaignFactory(
        status=Campaign.Status.PENDING_APPROVAL,
        cap_source_sender=bmkg,
        cap_source_identifier="A2",
        cap_source_references=[[bmkg, "A1"]],
        **window,
    )
    unrelated = CampaignFactory(status=Campaign.Status.SCHEDULED, cap_source_sender=bmkg, cap_source_identifier="B1")
    update = CampaignFactory(
        author=officer_client.user,
        status=Campaign.Status.PENDING_APPROVAL,
        cap_source_sender=bmkg,
        cap_source_identifier="A3",
        cap_source_references=[[bmkg, "A2"]],
        **window,
    )
    approver = UserFactory(role=Role.APPROVER)
    review = client_for(approver).get(f"/campaigns/{update.pk}/review/").content.decode()
    assert "Menyetujuinya membatalkan yang digantikannya" in review
    assert f'href="/campaigns/{first.pk}/"' in review and f'href="/campaigns/{second.pk}/"' in review

    campaign_approve(campaign=update, approver=approver, content_hash=campaign_content_hash(update))

    statuses = dict(Campaign.objects.values_list("pk", "status"))
    assert statuses[first.pk] == statuses[second.pk] == Campaign.Status.CANCELLED
    assert (statuses[update.pk], statuses[unrelated.pk]) == (Campaign.Status.APPROVED, Campaign.Status.SCHEDULED)
    cancelled = AuditEvent.objects.get(action="campaign.cancel", object_id=str(first.pk))
    assert (cancelled.actor, cancelled.from_state) == (approver, Campaign.Status.SCHEDULED)
    assert cancelled.details["reason"] == f"Superseded by the CAP update of campaign {update.pk}, approved."


BMKG = "bmkg@bmkg.go.id"


def bmkg_alert(identifier: str, *, updates: str = "", pending: bool = False, **fields) -> Campaign:
    """Return an area broadcast imported from BMKG's message `identifier` (an update of `updates`), approved
    unless `pending` (then waiting for its approver)."""
    if updates:
        fields["cap_source_references"] = [[BMKG, updates]]
    if pending:
        fields.update(approved=False, status=Campaign.Status.PENDING_APPROVAL)
    return broadcast_campaign(cap_source_sender=BMKG, cap_source_identifier=identifier, **fields)


def approve(campaign: Campaign, approver) -> None:
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))


def test_approving_an_exercise_update_leaves_the_actual_alert_it_names_alone(officer_client):
    blitar_areas()
    actual = bmkg_alert("A1")
    drill = bmkg_alert("X2", updates="A1", pending=True, exercise=True)
    approver = UserFactory(role=Role.APPROVER)
    review = client_for(approver).get(f"/campaigns/{drill.pk}/review/").content.decode()
    assert "data-cap-supersedes" not in review

    approve(drill, approver)

    actual.refresh_from_db()
    assert actual.status == Campaign.Status.APPROVED


def test_an_exercise_cap_cancel_withdraws_no_actual_alert(officer_client):
    campaign = _import_geocoded_alert(officer_client)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.APPROVED)
    drill = CANCEL.replace("<status>Actual</status>", "<status>Exercise</status>")
    response = _post_xml(officer_client, drill)
    assert response.status_code == 400, response.json()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_an_alert_whose_update_was_approved_first_is_not_approved_and_the_review_says_so(officer_client):
    blitar_areas()
    # The update was imported and approved before the alert it replaces was imported.
    update = bmkg_alert("A2", updates="A1")
    original = bmkg_alert("A1", pending=True)
    approver = UserFactory(role=Role.APPROVER)
    client = client_for(approver)
    review = client.get(f"/campaigns/{original.pk}/review/").content.decode()
    assert "Pembaruannya sudah disetujui" in review
    assert f'href="/campaigns/{update.pk}/"' in review

    with pytest.raises(ServiceConflict, match=f"campaign {update.pk}"):
        approve(original, approver)
    response = client.post(
        f"/campaigns/{original.pk}/review/",
        {"decision": "approve", "content_hash": campaign_content_hash(original), "confirm": "on"},
    )
    assert response.status_code == 409
    assert "Pembaruannya sudah disetujui" in response.content.decode()
    original.refresh_from_db()
    assert original.status == Campaign.Status.PENDING_APPROVAL


def test_the_history_gives_the_reasons_of_a_supersede_and_of_an_issuers_cancel_in_indonesian(officer_client):
    blitar_areas()
    replaced = bmkg_alert("A1")
    update = bmkg_alert("A2", updates="A1", pending=True)
    approve(update, UserFactory(role=Role.APPROVER))
    withdrawn = _import_geocoded_alert(officer_client)
    Campaign.objects.filter(pk=withdrawn.pk).update(status=Campaign.Status.APPROVED)
    assert _post_xml(officer_client, CANCEL).status_code == 200

    client = client_for(officer_client.user)
    superseded_page = client.get(f"/campaigns/{replaced.pk}/").content.decode()
    withdrawn_page = client.get(f"/campaigns/{withdrawn.pk}/").content.decode()

    assert f"Alasan: Digantikan oleh pembaruan CAP kampanye {update.pk}, yang disetujui." in superseded_page
    assert (
        "Alasan: Ditarik oleh penerbitnya (CAP Cancel satgas-covid-35-0001-cancel dari satgas@jatimprov.go.id)."
        in withdrawn_page
    )


def test_the_page_of_a_campaign_withdrawn_by_its_issuer_while_pending_gives_the_reason_in_indonesian(officer_client):
    campaign = _import_geocoded_alert(officer_client)
    campaign_submit(campaign=campaign, actor=officer_client.user)
    assert _post_xml(officer_client, CANCEL).status_code == 200

    page = client_for(officer_client.user).get(f"/campaigns/{campaign.pk}/").content.decode()

    assert "Withdrawn by the issuer" not in page
    assert "Ditarik oleh penerbitnya (CAP Cancel satgas-covid-35-0001-cancel dari satgas@jatimprov.go.id)." in page


def test_the_page_of_an_alert_its_approved_update_cancelled_does_not_ask_to_reject_it(officer_client):
    blitar_areas()
    original = bmkg_alert("A1")
    update = bmkg_alert("A2", updates="A1", pending=True)
    approver = UserFactory(role=Role.APPROVER)
    approve(update, approver)
    original.refresh_from_db()
    assert original.status == Campaign.Status.CANCELLED

    page = client_for(approver).get(f"/campaigns/{original.pk}/").content.decode()

    assert "data-cap-replaced" not in page
    assert "tolaklah" not in page


def test_the_author_of_an_alert_its_issuer_withdrew_while_pending_is_emailed_the_reason_in_indonesian(officer_client):
    from smsblast.models import Notification

    officer_client.user.email = "petugas@blitarkab.go.id"
    officer_client.user.save(update_fields=["email"])
    campaign = _import_geocoded_alert(officer_client)
    campaign_submit(campaign=campaign, actor=officer_client.user)
    assert _post_xml(officer_client, CANCEL).status_code == 200

    (notice,) = Notification.objects.filter(kind="campaign.rejected", object_id=str(campaign.pk))
    assert "Withdrawn by the issuer" not in notice.body
    assert (
        "Alasan: Ditarik oleh penerbitnya (CAP Cancel satgas-covid-35-0001-cancel dari satgas@jatimprov.go.id)."
        in notice.body
    )


def test_the_page_of_an_approved_update_does_not_say_approving_it_cancels_an_alert_imported_after(officer_client):
    blitar_areas()
    update = bmkg_alert("A2", updates="A1")
    bmkg_alert("A1", pending=True)

    page = client_for(UserFactory(role=Role.APPROVER)).get(f"/campaigns/{update.pk}/").content.decode()

    assert "data-cap-supersedes" not in page


def test_an_alert_whose_instruction_holds_a_direction_override_is_refused_and_nothing_is_created(officer_client):
    # The pages do not edit the instruction, so it could never be submitted: the import says why at once.
    blitar_areas()
    OperatorFactory(slug="telkomsel")
    document = GEOCODES.format(description="Mulai 3 Juli 2021.").replace("hindari kerumunan", "hindari \u202ekerumunan")
    response = _post_xml(officer_client, document)
    assert response.status_code == 400
    assert "instruction holds characters" in response.json()["detail"]
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in response.json()["detail"]
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("language", ["in-ID", "in", "ind"])
def test_an_info_block_in_the_legacy_or_three_letter_code_of_indonesian_is_taken_as_the_indonesian_one(
    officer_client, language
):
    blitar_areas()
    document = BMKG_POLYGON.format(polygon=_blitar_west_polygon()).replace(
        "<language>id-ID</language>", f"<language>{language}</language>"
    )
    response = _post_xml(officer_client, document)
    assert response.status_code == 201, response.json()
    assert response.json()["text"].startswith("Peringatan dini hujan lebat")
    assert not any("No Indonesian info block" in note for note in response.json()["notes"])


# --- the language of the answers ---------------------------------------------------------------

OUT_OF_RANGE_POLYGON = "-100,100 -100,101 -101,101 -101,100 -100,100"


def _expired(document: str) -> str:
    expires = (timezone.now() - timedelta(days=1)).astimezone(timezone.get_fixed_timezone(7 * 60))
    return document.replace("<urgency>", f"<expires>{expires.replace(microsecond=0).isoformat()}</expires><urgency>")


@pytest.mark.parametrize(
    ("document", "english", "indonesian"),
    [
        ("<alert><identifier>unterminated", "The document is not well-formed XML", "bukan XML yang tersusun"),
        (
            "<alert><identifier>x</identifier></alert>",
            "Not a CAP alert: the root element is 'alert'",
            "Ini bukan peringatan CAP: elemen akarnya 'alert', padahal seharusnya 'alert' dalam namespace CAP 1.1",
        ),
        (
            BMKG_POLYGON.format(polygon=OUT_OF_RANGE_POLYGON),
            "Skipped a polygon of Kab. Blitar bagian barat: A CAP polygon point lies outside latitude/longitude range.",
            "Sebuah <polygon> dari Kab. Blitar bagian barat dilewati: Sebuah titik <polygon> CAP berada di luar "
            "rentang lintang/bujur.",
        ),
        (
            BMKG_POLYGON.format(polygon=OUT_OF_RANGE_POLYGON),
            "The CAP alert has no usable area",
            "Peringatan CAP ini tidak memiliki wilayah yang dapat dipakai: tidak ada <geocode> yang cocok dengan kode "
            "Kemendagri",
        ),
        (
            _expired(GEOCODES.format(description="x")),
            "an expired alert is not imported",
            "Peringatan CAP ini sudah kedaluwarsa pada",
        ),
        (GEOCODES.replace("<status>Actual", "<status>Test"), "status 'Test'", "status CAP 'Test' tidak diimpor"),
    ],
    ids=["bad-xml", "no-namespace", "polygon-out-of-range", "no-usable-area", "expired", "status"],
)
def test_an_import_is_refused_in_the_language_the_client_asks_for_indonesian_without_one(
    officer_client, document, english, indonesian
):
    blitar_areas()
    document = document.format(description="x") if "{description}" in document else document
    asked_in_indonesian = _post_xml(officer_client, document, HTTP_ACCEPT_LANGUAGE="id")
    asked_in_english = _post_xml(officer_client, document, HTTP_ACCEPT_LANGUAGE="en")
    officer_client.defaults.pop("HTTP_ACCEPT_LANGUAGE")
    asked_in_none = _post_xml(officer_client, document)
    assert asked_in_indonesian.status_code == asked_in_english.status_code == asked_in_none.status_code == 400
    assert indonesian in asked_in_indonesian.json()["detail"]
    assert asked_in_none.json()["detail"] == asked_in_indonesian.json()["detail"]
    assert english in asked_in_english.json()["detail"]
    assert not Campaign.objects.exists()


def test_an_oversized_document_and_a_missing_file_are_refused_in_indonesian(officer_client):
    oversized = officer_client.post(
        IMPORT_URL,
        data="<alert/>",
        content_type="application/cap+xml",
        CONTENT_LENGTH=str(2 * 1024 * 1024),
        HTTP_ACCEPT_LANGUAGE="id",
    )
    no_file = officer_client.post(IMPORT_URL, {"document": "x"}, format="multipart", HTTP_ACCEPT_LANGUAGE="id")
    assert oversized.status_code == 413
    assert oversized.json() == {"detail": "Dokumen ini lebih besar dari 1024 KiB."}
    assert no_file.status_code == 400
    assert no_file.json() == {
        "detail": "Kirim dokumen CAP sebagai berkas bernama 'file'.",
        "errors": {"file": "Wajib diisi."},
    }


def test_what_an_import_noted_is_in_indonesian_and_its_record_in_english(cap_world, api_client_for):
    _tulungagung_officer()
    blitar = api_client_for(UserFactory(role=Role.OFFICER, jurisdiction_id="35.05"))
    response = _post_xml(blitar, TWO_REGENCIES.format(description="Mulai 3 Juli 2021."), HTTP_ACCEPT_LANGUAGE="id")
    assert response.status_code == 201, response.json()
    assert response.json()["notes"] == [
        "Wilayah diambil dari <geocode> peringatan.",
        "Tidak disertakan karena di luar yurisdiksi Anda (35.05 Kabupaten Blitar): 35.04 Kabupaten Tulungagung.",
    ]
    event = AuditEvent.objects.get(action="campaign.cap_import")
    assert event.details["narrowed"] == [
        "Left out, outside your jurisdiction (35.05 Kabupaten Blitar): 35.04 Kabupaten Tulungagung."
    ]


def test_an_export_refused_and_an_issuers_cancel_refused_say_why_in_indonesian(officer_client, api_client_for):
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar")
    unapproved = officer_client.get(
        f"/api/v1/campaigns/{broadcast_campaign(approved=False).pk}/cap.xml", HTTP_ACCEPT_LANGUAGE="id"
    )
    cancel = _post_xml(officer_client, CANCEL, HTTP_ACCEPT_LANGUAGE="id")
    assert unapproved.status_code == 409
    assert unapproved.json()["detail"] == (
        "Hanya kampanye yang sudah disetujui yang dapat diekspor sebagai CAP; kampanye ini tidak memiliki "
        "persetujuan yang berlaku."
    )
    assert cancel.status_code == 400
    assert cancel.json()["detail"] == "Cancel CAP ini tidak merujuk ke peringatan yang pernah diimpor."
