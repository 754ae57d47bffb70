import threading
import uuid
from unittest import mock

from smsblast import ids
from smsblast.ids import uuid7


def test_uuid7_has_version_7_and_the_rfc_variant():
    value = uuid7()
    assert value.version == 7
    assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_time_in_milliseconds():
    with mock.patch.object(ids.time, "time_ns", return_value=1_790_000_000_123_456_789):
        ids._last_ms = 0
        value = uuid7()
    assert value.int >> 80 == 1_790_000_000_123


def test_uuid7_increases_within_one_millisecond_and_past_the_counter():
    frozen = 1_790_000_000_000_000_000
    with mock.patch.object(ids.time, "time_ns", return_value=frozen):
        ids._last_ms = 0
        keys = [uuid7() for _ in range(5_000)]  # more than the 4,096 the counter holds in one millisecond
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert keys[-1].int >> 80 == frozen // 1_000_000 + 1


def test_uuid7_from_several_threads_stays_unique():
    keys: list[uuid.UUID] = []

    def make():
        keys.extend(uuid7() for _ in range(2_000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 8_000


def test_dispatch_batches_get_time_ordered_keys():
    from campaigns.models import DispatchBatch

    first, second = DispatchBatch().pk, DispatchBatch().pk
    assert first.version == 7
    assert first < second
