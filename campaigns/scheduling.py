"""When a campaign runs: schedule validation, next occurrences and quiet hours; no Django import.

A schedule is entered in the local time of the target area's zone (WIB, WITA or WIT) and every moment this
module returns is an aware UTC datetime, the form the database stores. The schedule dict, as stored on the
campaign and hashed into its approval:

    {"kind": "now"}
    {"kind": "once", "at": "2021-07-01T13:00"}
    {"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}, "until": "2021-12-31"}
    {"kind": "weekly", "weekdays": [0, 3], "time": "09:00", "until": "2021-12-31"}

Weekdays count from Monday = 0 (Friday = 4). `until` is an inclusive local date. Any kind may carry
`"quiet_hours": {"start": "21:00", "end": "06:00"}`: a normal-priority run does not start or send inside
that window (which may wrap midnight) and resumes at its end; an urgent run ignores it. A campaign reaching
areas in several zones keeps the quiet hours of each: it waits while it is night in any of them.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

KINDS = ("now", "once", "daily", "weekly")
RECURRING_KINDS = frozenset({"daily", "weekly"})
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The keys each kind reads; another key with a value would be dropped and the campaign sent at other times.
KIND_KEYS = {
    "now": frozenset({"kind", "quiet_hours"}),
    "once": frozenset({"kind", "at", "quiet_hours"}),
    "daily": frozenset({"kind", "time", "weekday_times", "until", "quiet_hours"}),
    "weekly": frozenset({"kind", "time", "weekdays", "until", "quiet_hours"}),
}

WIB = ("Asia/Jakarta", "WIB")
WITA = ("Asia/Makassar", "WITA")
WIT = ("Asia/Jayapura", "WIT")
# Bali, Nusa Tenggara, South/East/North Kalimantan and all of Sulawesi; West and Central Kalimantan stay WIB.
_WITA_PROVINCES = frozenset({"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"})
# Maluku, Maluku Utara and the six Papua provinces.
_WIT_PROVINCES = frozenset({"81", "82", "91", "92", "93", "94", "95", "96"})


class ScheduleError(ValueError):
    """A schedule that cannot be run; `field` names the offending key."""

    def __init__(self, message: str, field: str = "schedule"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Zone:
    name: str  # IANA name, e.g. "Asia/Makassar"
    label: str  # WIB, WITA or WIT

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.name)


def zone_for_area_code(code: str | None) -> Zone:
    """Return the zone of an area code's province; an empty or unknown code falls back to WIB."""
    province = (code or "").split(".")[0]
    if province in _WITA_PROVINCES:
        return Zone(*WITA)
    if province in _WIT_PROVINCES:
        return Zone(*WIT)
    return Zone(*WIB)


def zone_named(name: str | None) -> Zone | None:
    """Return the Indonesian zone with this IANA name (as frozen on a run), or None for any other name."""
    return next((Zone(*zone) for zone in (WIB, WITA, WIT) if zone[0] == name), None)


def zone_for_area_codes(codes) -> Zone:
    """Return the zone a campaign's times are entered in: that of its first target area.

    A campaign spanning several zones is entered in the zone of the area listed first, which the form shows
    next to every time field.
    """
    codes = list(codes or [])
    return zone_for_area_code(codes[0] if codes else None)


def _parse_time(value, field: str) -> time:
    if not isinstance(value, str):
        raise ScheduleError("Give a time as HH:MM.", field)
    try:
        parsed = time.fromisoformat(value)
    except ValueError:
        raise ScheduleError(f"{value!r} is not a time (HH:MM).", field) from None
    if parsed.tzinfo is not None:
        raise ScheduleError("Give the local time without a UTC offset; the area's zone applies.", field)
    return parsed.replace(second=0, microsecond=0)


def _parse_weekday(value, field: str) -> int:
    if isinstance(value, str) and value.strip().lower()[:3] in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(value.strip().lower()[:3])
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(value)
        day = int(value)
    except (TypeError, ValueError):
        raise ScheduleError(f"{value!r} is not a weekday (0 = Monday … 6 = Sunday).", field) from None
    if not 0 <= day <= 6:
        raise ScheduleError(f"{value!r} is not a weekday (0 = Monday … 6 = Sunday).", field)
    return day


def _fmt(t: time) -> str:
    return t.strftime("%H:%M")


def schedule_normalize(raw) -> dict:
    """Return the canonical form of a schedule (what is stored and hashed) or raise ScheduleError."""
    if not isinstance(raw, dict):
        raise ScheduleError("A schedule is an object with a 'kind'.")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ScheduleError(f"Schedule kind must be one of: {', '.join(KINDS)}.", "kind")
    # "until" outside recurring kinds has its own message below.
    unused = sorted(
        str(key)
        for key, value in raw.items()
        if key not in KIND_KEYS[kind] | {"until"} and value not in (None, "", [], {})
    )
    if unused:
        raise ScheduleError(f"A {kind} schedule does not take {', '.join(unused)}.", unused[0])
    result: dict = {"kind": kind}
    if kind == "once":
        at = raw.get("at")
        try:
            moment = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise ScheduleError("Give the local date and time as YYYY-MM-DDTHH:MM.", "at")
        if moment.tzinfo is not None:
            raise ScheduleError("Give the local time without a UTC offset; the area's zone applies.", "at")
        # Year 1 in WIB is before the first moment a UTC datetime holds; such years are typing errors anyway.
        if not 2000 <= moment.year <= 9998:
            raise ScheduleError("Give a date between the years 2000 and 9998.", "at")
        result["at"] = moment.replace(second=0, microsecond=0).isoformat(timespec="minutes")
    if kind in RECURRING_KINDS:
        result["time"] = _fmt(_parse_time(raw.get("time"), "time"))
        if kind == "daily":
            overrides = raw.get("weekday_times") or {}
            if not isinstance(overrides, dict):
                raise ScheduleError("weekday_times maps a weekday to a time.", "weekday_times")
            result["weekday_times"] = {
                str(_parse_weekday(day, "weekday_times")): _fmt(_parse_time(value, "weekday_times"))
                for day, value in sorted(overrides.items(), key=lambda item: _parse_weekday(item[0], "weekday_times"))
            }
            if len(result["weekday_times"]) != len(overrides):
                raise ScheduleError("weekday_times names a weekday twice.", "weekday_times")
            if not result["weekday_times"]:
                del result["weekday_times"]
        else:
            days = raw.get("weekdays")
            if not isinstance(days, list) or not days:
                raise ScheduleError("A weekly schedule needs at least one weekday.", "weekdays")
            result["weekdays"] = sorted({_parse_weekday(day, "weekdays") for day in days})
        until = raw.get("until")
        if until:
            try:
                result["until"] = date.fromisoformat(until).isoformat()
            except (TypeError, ValueError):
                raise ScheduleError(f"{until!r} is not a date (YYYY-MM-DD).", "until") from None
    elif raw.get("until"):
        raise ScheduleError("Only recurring schedules have an end date.", "until")
    quiet = raw.get("quiet_hours")
    if quiet:
        if not isinstance(quiet, dict):
            raise ScheduleError("quiet_hours is {'start': 'HH:MM', 'end': 'HH:MM'}.", "quiet_hours")
        start = _parse_time(quiet.get("start"), "quiet_hours")
        end = _parse_time(quiet.get("end"), "quiet_hours")
        if start == end:
            raise ScheduleError("Quiet hours must not start and end at the same time.", "quiet_hours")
        result["quiet_hours"] = {"start": _fmt(start), "end": _fmt(end)}
    return result


def is_recurring(schedule: dict) -> bool:
    return schedule.get("kind") in RECURRING_KINDS


def quiet_hours_end(moment: datetime, *, quiet_hours: dict | None, zone: Zone) -> datetime | None:
    """Return when the quiet window containing `moment` ends (UTC), or None if `moment` is not quiet.

    The window is [start, end) in local time and wraps midnight when start > end (21:00-06:00).
    """
    if not quiet_hours:
        return None
    start = time.fromisoformat(quiet_hours["start"])
    end = time.fromisoformat(quiet_hours["end"])
    local = moment.astimezone(zone.tzinfo)
    clock = local.time().replace(tzinfo=None)
    day = local.date()
    if start < end:
        inside = start <= clock < end
        end_day = day
    else:
        inside = clock >= start or clock < end
        end_day = day + timedelta(days=1) if clock >= start else day
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=zone.tzinfo).astimezone(UTC)


def quiet_hours_end_in(moment: datetime, *, quiet_hours: dict | None, zones) -> datetime | None:
    """Return when it stops being quiet in every one of `zones` (UTC), or None if `moment` is quiet in none.

    Each zone's window is in its own local time, so recipients in the east are not woken by a run that
    only Java's night would hold back, nor those in the west by one released at dawn in Papua.
    """
    released = None
    # Ending one zone's window may land inside another's; the windows of three zones an hour apart chain at
    # most a few times, and a window so long that together they cover the whole day never ends.
    for _ in range(2 * len(zones) + 1):
        ends = [end for zone in zones if (end := quiet_hours_end(moment, quiet_hours=quiet_hours, zone=zone))]
        if not ends:
            break
        moment = released = max(ends)
    return released


def may_send_at(moment: datetime, *, schedule: dict, zone: Zone, priority: str, quiet_zones=None) -> datetime:
    """Return the earliest moment at or after `moment` when a run of this priority may start or send.

    `quiet_zones` are the zones whose nights the quiet hours keep (every zone the target reaches); by
    default the zone the schedule is entered in.
    """
    if priority == "urgent":
        return moment.astimezone(UTC)
    released = quiet_hours_end_in(moment, quiet_hours=schedule.get("quiet_hours"), zones=quiet_zones or [zone])
    return released if released is not None else moment.astimezone(UTC)


def is_past_end(schedule: dict, *, zone: Zone, start: datetime, now: datetime) -> bool:
    """Return whether a run due at `start` (UTC) is too late to start at `now`: its schedule ended meanwhile.

    `until` is an inclusive local date. A last occurrence that quiet hours moved into the next morning still
    starts that morning; an occurrence missed (the scheduler down, the campaign paused) never starts on a day
    after both.
    """
    until = schedule.get("until")
    if not until:
        return False
    last_day = max(date.fromisoformat(until), start.astimezone(zone.tzinfo).date())
    return now.astimezone(zone.tzinfo).date() > last_day


def _local_time_on(schedule: dict, day: date) -> time | None:
    """Return the local time the recurring schedule fires on `day`, or None if it does not."""
    if schedule["kind"] == "daily":
        override = schedule.get("weekday_times", {}).get(str(day.weekday()))
        return time.fromisoformat(override or schedule["time"])
    if day.weekday() in schedule["weekdays"]:
        return time.fromisoformat(schedule["time"])
    return None


def _occurrence_after(schedule: dict, *, zone: Zone, after: datetime, inclusive: bool) -> datetime | None:
    """Return the first local occurrence strictly after (or at, if inclusive) `after`, in UTC."""
    kind = schedule["kind"]
    if kind == "now":
        return after.astimezone(UTC) if inclusive else None
    if kind == "once":
        at = datetime.fromisoformat(schedule["at"]).replace(tzinfo=zone.tzinfo).astimezone(UTC)
        return at if (at >= after if inclusive else at > after) else None
    until = date.fromisoformat(schedule["until"]) if schedule.get("until") else None
    day = after.astimezone(zone.tzinfo).date()
    # Eight days always reach the next firing weekday.
    for offset in range(8):
        candidate_day = day + timedelta(days=offset)
        if until is not None and candidate_day > until:
            return None
        clock = _local_time_on(schedule, candidate_day)
        if clock is None:
            continue
        candidate = datetime.combine(candidate_day, clock, tzinfo=zone.tzinfo).astimezone(UTC)
        if candidate > after or (inclusive and candidate == after):
            return candidate
    return None


def last_occurrence(schedule: dict, *, zone: Zone) -> datetime | None:
    """Return the last occurrence of a recurring schedule on or before its `until` (UTC); None without an end."""
    until = schedule.get("until")
    if not is_recurring(schedule) or not until:
        return None
    for offset in range(7):  # a weekly schedule fires on one of the last seven days
        day = date.fromisoformat(until) - timedelta(days=offset)
        clock = _local_time_on(schedule, day)
        if clock is not None:
            return datetime.combine(day, clock, tzinfo=zone.tzinfo).astimezone(UTC)
    return None


def first_start(schedule: dict, *, zone: Zone, now: datetime, priority: str, quiet_zones=None) -> datetime | None:
    """Return when the first run of a freshly scheduled campaign may start (UTC), or None if never.

    "now" starts at once (after quiet hours for a normal run); "once" in the past never starts.
    """
    occurrence = _occurrence_after(schedule, zone=zone, after=now, inclusive=True)
    if occurrence is None:
        return None
    return may_send_at(occurrence, schedule=schedule, zone=zone, priority=priority, quiet_zones=quiet_zones)


def next_start(schedule: dict, *, zone: Zone, after: datetime, priority: str, quiet_zones=None) -> datetime | None:
    """Return when the run after the one that started at `after` may start (UTC), or None if none.

    Occurrences are counted after the previous run's (quiet-adjusted) start, so two occurrences that quiet
    hours push to the same morning make one run, not two.
    """
    if not is_recurring(schedule):
        return None
    occurrence = _occurrence_after(schedule, zone=zone, after=after, inclusive=False)
    if occurrence is None:
        return None
    return may_send_at(occurrence, schedule=schedule, zone=zone, priority=priority, quiet_zones=quiet_zones)
