"""Schedules: zones by province, next occurrences, end dates and quiet hours (pure logic)."""

from datetime import UTC, datetime

import pytest

from campaigns.scheduling import (
    ScheduleError,
    first_start,
    is_past_end,
    last_occurrence,
    next_start,
    quiet_hours_end,
    schedule_normalize,
    zone_for_area_code,
    zone_for_area_codes,
)

BLORA = zone_for_area_code("33.16")
BLORA_DAILY = schedule_normalize({"kind": "daily", "time": "13:00", "weekday_times": {"fri": "10:00"}})


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("33.16", "WIB"),
        ("35.05.01", "WIB"),
        ("61.01", "WIB"),  # Kalimantan Barat
        ("62.12", "WIB"),  # Kalimantan Tengah (Barito Timur)
        ("63.71", "WITA"),  # Kalimantan Selatan
        ("64", "WITA"),
        ("65.01", "WITA"),
        ("51.71", "WITA"),  # Bali
        ("52.01", "WITA"),
        ("53.01", "WITA"),
        ("71.71", "WITA"),
        ("76.01", "WITA"),
        ("81.71", "WIT"),
        ("82.01", "WIT"),
        ("91.71", "WIT"),
        ("96.01", "WIT"),
        ("", "WIB"),
    ],
)
def test_zone_follows_the_province(code, label):
    assert zone_for_area_code(code).label == label


def test_every_province_in_the_wilayah_list_has_a_zone():
    from pathlib import Path

    from django.conf import settings

    csv_path = Path(settings.BASE_DIR).parent / "shared" / "data" / "wilayah" / "kode_wilayah.csv"
    if not csv_path.exists():
        pytest.skip("shared wilayah data not present")
    provinces = [line.split(",")[0] for line in csv_path.read_text().splitlines()[1:] if ",provinsi," in line]
    labels = {code: zone_for_area_code(code).label for code in provinces}
    assert len(provinces) == 38
    wit = {code for code, label in labels.items() if label == "WIT"}
    assert wit == {"81", "82", "91", "92", "93", "94", "95", "96"}
    assert sum(1 for label in labels.values() if label == "WITA") == 12


def test_a_campaign_is_entered_in_the_zone_of_its_first_area():
    assert zone_for_area_codes(["73.71", "35.05"]).label == "WITA"
    assert zone_for_area_codes([]).label == "WIB"


def test_blora_daily_runs_at_13_wib_and_at_10_on_fridays():
    # Wednesday 2021-07-07 08:00 WIB.
    now = utc(2021, 7, 7, 1, 0)
    first = first_start(BLORA_DAILY, zone=BLORA, now=now, priority="normal")
    assert first == utc(2021, 7, 7, 6, 0)  # 13:00 WIB
    thursday = next_start(BLORA_DAILY, zone=BLORA, after=first, priority="normal")
    assert thursday == utc(2021, 7, 8, 6, 0)
    friday = next_start(BLORA_DAILY, zone=BLORA, after=thursday, priority="normal")
    assert friday == utc(2021, 7, 9, 3, 0)  # 10:00 WIB
    saturday = next_start(BLORA_DAILY, zone=BLORA, after=friday, priority="normal")
    assert saturday == utc(2021, 7, 10, 6, 0)


def test_daily_after_todays_time_starts_tomorrow():
    now = utc(2021, 7, 7, 6, 30)  # 13:30 WIB on a Wednesday
    assert first_start(BLORA_DAILY, zone=BLORA, now=now, priority="normal") == utc(2021, 7, 8, 6, 0)


def test_recurring_schedule_stops_after_its_until_date():
    schedule = schedule_normalize({"kind": "daily", "time": "13:00", "until": "2021-07-08"})
    last = next_start(schedule, zone=BLORA, after=utc(2021, 7, 7, 6, 0), priority="normal")
    assert last == utc(2021, 7, 8, 6, 0)
    assert next_start(schedule, zone=BLORA, after=last, priority="normal") is None


def test_a_missed_occurrence_is_past_its_schedules_end_only_on_a_day_after_the_end_date_in_local_time():
    until_sunday = schedule_normalize({"kind": "daily", "time": "13:00", "until": "2021-07-11"})
    sunday_13 = utc(2021, 7, 11, 6, 0)
    assert not is_past_end(until_sunday, zone=BLORA, start=sunday_13, now=utc(2021, 7, 11, 16, 59))  # 23:59 WIB
    assert is_past_end(until_sunday, zone=BLORA, start=sunday_13, now=utc(2021, 7, 11, 17, 0))  # Monday 00:00 WIB
    assert not is_past_end(BLORA_DAILY, zone=BLORA, start=sunday_13, now=utc(2021, 7, 20))  # no end date
    # The last occurrence, Sunday 22:00, waits out quiet hours until Monday 06:00 and still starts that Monday.
    quiet = schedule_normalize(
        {"kind": "daily", "time": "22:00", "until": "2021-07-11", "quiet_hours": {"start": "21:00", "end": "06:00"}}
    )
    monday_06 = utc(2021, 7, 11, 23, 0)
    assert not is_past_end(quiet, zone=BLORA, start=monday_06, now=monday_06)
    assert is_past_end(quiet, zone=BLORA, start=monday_06, now=utc(2021, 7, 12, 17, 0))  # Tuesday 00:00 WIB


def test_weekly_runs_on_its_weekdays_only():
    schedule = schedule_normalize({"kind": "weekly", "weekdays": ["mon", 3], "time": "09:00"})
    # Tuesday 2021-07-06 -> Thursday 2021-07-08 09:00 WIB -> Monday 2021-07-12.
    first = first_start(schedule, zone=BLORA, now=utc(2021, 7, 6, 0, 0), priority="normal")
    assert first == utc(2021, 7, 8, 2, 0)
    assert next_start(schedule, zone=BLORA, after=first, priority="normal") == utc(2021, 7, 12, 2, 0)


def test_weekly_runs_cross_the_year_end_in_local_time_and_stop_on_the_end_date():
    makassar = zone_for_area_code("73.71")
    schedule = schedule_normalize({"kind": "weekly", "weekdays": ["fri"], "time": "09:00", "until": "2022-01-07"})
    first = first_start(schedule, zone=makassar, now=utc(2021, 12, 29), priority="normal")
    assert first == utc(2021, 12, 31, 1, 0)  # Friday 31 December 09:00 WITA
    second = next_start(schedule, zone=makassar, after=first, priority="normal")
    assert second == utc(2022, 1, 7, 1, 0)  # Friday 7 January, the end date itself
    assert next_start(schedule, zone=makassar, after=second, priority="normal") is None


def test_once_in_the_past_never_starts_and_once_never_repeats():
    schedule = schedule_normalize({"kind": "once", "at": "2021-07-07T09:30"})
    assert first_start(schedule, zone=BLORA, now=utc(2021, 7, 7, 3, 0), priority="normal") is None
    start = first_start(schedule, zone=BLORA, now=utc(2021, 7, 7, 1, 0), priority="normal")
    assert start == utc(2021, 7, 7, 2, 30)
    assert next_start(schedule, zone=BLORA, after=start, priority="normal") is None


def test_times_in_wita_and_wit_are_stored_in_utc():
    schedule = schedule_normalize({"kind": "once", "at": "2021-07-07T13:00"})
    now = utc(2021, 7, 1)
    assert first_start(schedule, zone=zone_for_area_code("73.71"), now=now, priority="normal") == utc(2021, 7, 7, 5)
    assert first_start(schedule, zone=zone_for_area_code("91.71"), now=now, priority="normal") == utc(2021, 7, 7, 4)


def test_quiet_hours_that_wrap_midnight_delay_a_normal_run_to_their_end():
    schedule = schedule_normalize({"kind": "now", "quiet_hours": {"start": "21:00", "end": "06:00"}})
    late_evening = utc(2021, 7, 7, 15, 30)  # 22:30 WIB
    assert first_start(schedule, zone=BLORA, now=late_evening, priority="normal") == utc(2021, 7, 7, 23, 0)
    early_morning = utc(2021, 7, 7, 21, 0)  # 04:00 WIB next day
    assert first_start(schedule, zone=BLORA, now=early_morning, priority="normal") == utc(2021, 7, 7, 23, 0)
    afternoon = utc(2021, 7, 7, 8, 0)
    assert first_start(schedule, zone=BLORA, now=afternoon, priority="normal") == afternoon


def test_urgent_runs_ignore_quiet_hours():
    schedule = schedule_normalize({"kind": "now", "quiet_hours": {"start": "21:00", "end": "06:00"}})
    late_evening = utc(2021, 7, 7, 15, 30)
    assert first_start(schedule, zone=BLORA, now=late_evening, priority="urgent") == late_evening


def test_quiet_hours_within_one_day():
    quiet = {"start": "12:00", "end": "14:00"}
    assert quiet_hours_end(utc(2021, 7, 7, 5, 30), quiet_hours=quiet, zone=BLORA) == utc(2021, 7, 7, 7, 0)
    assert quiet_hours_end(utc(2021, 7, 7, 7, 0), quiet_hours=quiet, zone=BLORA) is None


def test_recurring_occurrences_pushed_to_the_same_morning_make_one_run():
    schedule = schedule_normalize(
        {
            "kind": "daily",
            "time": "05:00",
            "weekday_times": {"3": "23:00"},
            "quiet_hours": {"start": "21:00", "end": "06:00"},
        }
    )
    # Thursday 23:00 and Friday 05:00 are both quiet: one run at Friday 06:00, the next Saturday 06:00.
    thursday_start = next_start(schedule, zone=BLORA, after=utc(2021, 7, 8, 0, 0), priority="normal")
    assert thursday_start == utc(2021, 7, 8, 23, 0)
    assert next_start(schedule, zone=BLORA, after=thursday_start, priority="normal") == utc(2021, 7, 9, 23, 0)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "hourly"}, "kind"),
        ({"kind": "once", "at": "tomorrow"}, "at"),
        ({"kind": "once", "at": "2021-07-07T13:00+07:00"}, "at"),
        ({"kind": "daily", "time": "25:00"}, "time"),
        ({"kind": "daily", "time": "13:00", "weekday_times": {"9": "10:00"}}, "weekday_times"),
        ({"kind": "weekly", "time": "13:00", "weekdays": []}, "weekdays"),
        ({"kind": "daily", "time": "13:00", "until": "31/12/2021"}, "until"),
        ({"kind": "now", "quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours"),
        # A key the kind does not use would be dropped and the campaign sent at other times than asked.
        ({"kind": "now", "at": "2030-01-01T10:00"}, "at"),
        ({"kind": "daily", "time": "13:00", "weekdays": [4]}, "weekdays"),
        ({"kind": "weekly", "time": "13:00", "weekdays": [4], "weekday_times": {"4": "10:00"}}, "weekday_times"),
        ({"kind": "daily", "time": "13:00", "quiet": {"start": "21:00", "end": "06:00"}}, "quiet"),
        ({"kind": "daily", "time": "13:00", "weekday_times": {"fri": "10:00", "4": "11:00"}}, "weekday_times"),
        ({"kind": "weekly", "time": "13:00", "weekdays": [True]}, "weekdays"),
        ({"kind": "daily", "time": "13:00+09:00"}, "time"),
    ],
)
def test_invalid_schedules_name_the_field(raw, field):
    with pytest.raises(ScheduleError) as caught:
        schedule_normalize(raw)
    assert caught.value.field == field


def test_normal_form_is_stable_for_hashing():
    a = schedule_normalize({"kind": "daily", "time": "13:00:00", "weekday_times": {"fri": "10:00"}})
    b = schedule_normalize({"kind": "daily", "time": "13:00", "weekday_times": {4: "10:00"}})
    assert a == b == {"kind": "daily", "time": "13:00", "weekday_times": {"4": "10:00"}}


def test_quiet_hours_hold_until_it_is_day_in_every_zone_the_campaign_reaches():
    schedule = schedule_normalize({"kind": "now", "quiet_hours": {"start": "21:00", "end": "06:00"}})
    wib_and_wit = [BLORA, zone_for_area_code("91.71")]
    # 19:30 WIB is 21:30 in Jayapura: its residents' night has begun, and it lasts until 06:00 in Blora.
    evening = utc(2021, 7, 7, 12, 30)
    assert first_start(schedule, zone=BLORA, now=evening, priority="normal", quiet_zones=wib_and_wit) == utc(
        2021, 7, 7, 23, 0
    )
    # 05:30 WIB is already 07:30 in Jayapura, but still night in Blora.
    assert quiet_hours_end(utc(2021, 7, 7, 22, 30), quiet_hours=schedule["quiet_hours"], zone=BLORA) == utc(
        2021, 7, 7, 23, 0
    )
    afternoon = utc(2021, 7, 7, 8, 0)  # 15:00 WIB, 17:00 WIT
    assert first_start(schedule, zone=BLORA, now=afternoon, priority="normal", quiet_zones=wib_and_wit) == afternoon
    assert first_start(schedule, zone=BLORA, now=evening, priority="urgent", quiet_zones=wib_and_wit) == evening


def test_the_last_occurrence_of_a_weekly_schedule_is_its_last_firing_day_on_or_before_until():
    # Until Sunday 2021-07-04; the schedule fires Mondays and Thursdays: the last run is Thursday 1 July, 09:00 WIB.
    weekly = schedule_normalize({"kind": "weekly", "weekdays": [0, 3], "time": "09:00", "until": "2021-07-04"})
    assert last_occurrence(weekly, zone=BLORA) == utc(2021, 7, 1, 2, 0)
    assert last_occurrence({**BLORA_DAILY, "until": "2021-07-02"}, zone=BLORA) == utc(2021, 7, 2, 3, 0)  # Friday 10:00
    assert last_occurrence(BLORA_DAILY, zone=BLORA) is None
