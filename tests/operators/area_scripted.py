"""A real area-broadcast adapter that answers from a script per operator, and builders for broadcast campaigns."""

import json
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.utils import timezone

from campaigns.models import Campaign, Mode
from operators.gateways.base import AreaBroadcastResult, GatewayAdapter, OutboundAreaBroadcast, Outcome, register
from tests.campaigns.factories import ApprovalFactory, CampaignFactory
from tests.smsblast.factories import AreaFactory

WILAYAH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wilayah"


@cache
def regency_boundary(code: str) -> dict:
    with open(WILAYAH / "batas_kabupaten.geojson") as handle:
        return next(f["geometry"] for f in json.load(handle)["features"] if f["properties"]["kode"] == code)


@register
class ScriptedAreaAdapter(GatewayAdapter):
    """Answers sends and cancels from `script[base_url]` (a list of outcomes), accepting when it runs out."""

    name = "scripted_area"
    script: dict[str, list[AreaBroadcastResult]] = {}
    sent: list[tuple[str, OutboundAreaBroadcast]] = []

    @classmethod
    def reset(cls, **script: list[AreaBroadcastResult]) -> None:
        cls.script = {key: list(value) for key, value in script.items()}
        cls.sent = []

    def _answer(self, kind: str, broadcast: OutboundAreaBroadcast) -> AreaBroadcastResult:
        type(self).sent.append((kind, broadcast))
        queue = type(self).script.get(broadcast.base_url.rsplit("/", 1)[-1], [])
        if queue:
            return queue.pop(0)
        return AreaBroadcastResult(outcome=Outcome.ACCEPTED, status_code=202, operator_ref=f"ref-{broadcast.base_url}")

    def send_area_broadcast(self, broadcast: OutboundAreaBroadcast) -> AreaBroadcastResult:
        return self._answer("send", broadcast)

    def cancel_area_broadcast(self, broadcast: OutboundAreaBroadcast) -> AreaBroadcastResult:
        return self._answer("cancel", broadcast)


def every_regency() -> None:
    """Create every province and kabupaten/kota of Indonesia, each regency with its published boundary."""
    from smsblast.models import Area, AreaLevel

    with open(WILAYAH / "batas_kabupaten.geojson") as handle:
        features = json.load(handle)["features"]
    known = set(Area.objects.values_list("code", flat=True))
    provinces = sorted({f["properties"]["kode"].split(".")[0] for f in features} - known)
    Area.objects.bulk_create(
        Area(code=code, name=f"Provinsi {code}", search_name=code, level=AreaLevel.PROVINSI) for code in provinces
    )
    Area.objects.bulk_create(
        Area(
            code=f["properties"]["kode"],
            name=f["properties"]["nama"],
            search_name=f["properties"]["nama"].lower(),
            level=AreaLevel.KABUPATEN,
            parent_id=f["properties"]["kode"].split(".")[0],
            population=100_000,
            boundary=f["geometry"],
        )
        for f in features
        if f["properties"]["kode"] not in known
    )


def blitar_areas(*, population: int = 1_261_699) -> None:
    """Create Jawa Timur, Kab. Blitar (real boundary, census population) and three kecamatan."""
    AreaFactory(code="35", name="Jawa Timur")
    AreaFactory(code="35.05", name="Kabupaten Blitar", population=population, boundary=regency_boundary("35.05"))
    for i in range(1, 4):
        AreaFactory(code=f"35.05.{i:02d}", name=f"Kecamatan {i}")


def broadcast_campaign(*, approved: bool = True, starts_in: timedelta = timedelta(minutes=10), **fields) -> Campaign:
    """Return an area-broadcast campaign for Kab. Blitar with a one-hour window, approved unless told not to."""
    starts_at = timezone.now() + starts_in
    defaults = {
        "mode": Mode.AREA_BROADCAST,
        "area_codes": ["35.05"],
        "starts_at": starts_at,
        "ends_at": starts_at + timedelta(hours=1),
        "status": Campaign.Status.APPROVED if approved else Campaign.Status.DRAFT,
        "instruction": "Tetap di rumah bila sakit.",
        "cap_event": "Covid-19",
    }
    campaign = CampaignFactory(**{**defaults, **fields})
    if approved:
        ApprovalFactory(campaign=campaign)
    return campaign
