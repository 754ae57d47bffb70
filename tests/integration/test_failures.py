"""End to end under injected failures: Redis restarted, database connections killed, a worker killed mid fan-out.

Each test breaks something while a run is under way, then plays beat until every delivery is final, and checks
what DESIGN's invariants promise: every recipient reached exactly once (the simulator saw no duplicate) and
every batch accepted, nothing left in flight.
"""

import socket
import subprocess
import time

import pytest

from campaigns.models import CampaignRun, DispatchBatch
from tests.concurrency import skip_unless_postgresql
from tests.conftest import redis_server_binary
from tests.integration.conftest import OPERATOR_SLUGS
from tests.integration.scenario import (
    all_final,
    batches_by_status,
    campaign_send_now,
    connections_terminate,
    deliveries_by_status,
    operators_create,
    run_finished,
    run_of,
    subscribers_create,
)

pytestmark = [pytest.mark.integration]


class RestartableRedis:
    """A Redis server of this module's own, so a test can stop and start it (losing everything, as --save '')."""

    def __init__(self, workdir):
        from smsblast.devtools import free_port

        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self.proc = subprocess.Popen([*argv, "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Redis server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="module")
def restartable_redis(tmp_path_factory):
    server = RestartableRedis(tmp_path_factory.mktemp("redis-restartable"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(restartable_redis):
    return restartable_redis.url


def assert_everyone_reached_once(stack, campaign, recipients: int) -> None:
    assert run_of(campaign).status in CampaignRun.FINAL_STATUSES
    assert sum(deliveries_by_status(campaign).values()) == recipients
    assert set(batches_by_status(campaign)) == {DispatchBatch.Status.ACCEPTED}
    stats = stack.stats()
    assert sum(stats[slug]["messages"] for slug in OPERATOR_SLUGS) == recipients
    assert all(stats[slug]["duplicates"] == 0 for slug in OPERATOR_SLUGS), stats


def some_batches_sent(stack) -> bool:
    return sum(s["batches"] for s in stack.stats().values()) >= 4


def test_redis_restarted_mid_run_loses_its_queues_yet_everyone_is_reached_once(stack, restartable_redis):
    operators = operators_create(stack, segments_per_second=2_000, batch_size=100, behaviour={"latency_ms": 100})
    subscribers_create(operators, 2_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(lambda: some_batches_sent(stack), timeout=60, every=0.1)

    # Queued tasks and the rate limiter's windows are gone; the reconciler re-drives what was lost.
    restartable_redis.stop()
    time.sleep(2)
    restartable_redis.start()
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90)

    assert_everyone_reached_once(stack, campaign, 2_000)


def test_database_connections_terminated_mid_run_lose_nothing_and_send_nothing_twice(stack):
    skip_unless_postgresql()
    operators = operators_create(stack, segments_per_second=2_000, batch_size=100, behaviour={"latency_ms": 100})
    subscribers_create(operators, 2_000)
    stack.start_workers("w1", "w2")
    campaign = campaign_send_now()
    stack.drive(lambda: some_batches_sent(stack), timeout=60, every=0.1)

    connections_terminate()
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90)

    assert_everyone_reached_once(stack, campaign, 2_000)


def test_worker_killed_during_fan_out_resumes_from_its_cursor_and_writes_everyone_once(stack):
    operators = operators_create(stack, segments_per_second=50_000, batch_size=200)
    subscribers_create(operators, 20_000)
    stack.start_workers("w1")
    campaign = campaign_send_now()

    def fan_out_started() -> bool:
        # Its first chunk is written; the later, larger ones are most likely still to come.
        run = run_of(campaign)
        return run is not None and run.fanout_cursor > 0

    stack.drive(fan_out_started, timeout=60, every=0.05)
    stack.kill_worker("w1")
    stack.start_workers("w1-restarted")
    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=90)

    assert_everyone_reached_once(stack, campaign, 20_000)


def test_batches_waiting_their_turn_in_the_queue_are_not_queued_again_until_their_tasks_are_lost(
    stack, restartable_redis, redis_client
):
    """A batch behind a long queue (a slow operator, busy workers) is as untouched as one whose task was lost.

    Re-driving it would copy every waiting task once a minute for as long as the queue takes to drain.
    """
    from datetime import timedelta

    from django.utils import timezone

    from campaigns.dispatch import dispatch_reconcile, run_fan_out, runs_start_due

    operators = operators_create(stack, segments_per_second=100, batch_size=10)
    subscribers_create(operators, 80)
    campaign = campaign_send_now()
    (run_id,) = runs_start_due()
    run_fan_out(run_id=run_id)  # no worker runs: the send tasks wait in the operators' queues
    batches = DispatchBatch.objects.filter(run__campaign=campaign).count()

    def queued() -> int:
        return sum(redis_client.llen(f"dispatch.{slug}") for slug in OPERATOR_SLUGS)

    assert queued() == batches
    later = timezone.now() + timedelta(minutes=2)
    for minute in range(3):
        dispatch_reconcile(now=later + timedelta(minutes=minute))
    assert queued() == batches

    # Redis loses them: now they are lost, and queued again once each.
    redis_client.flushdb()
    assert dispatch_reconcile(now=later + timedelta(minutes=4))["requeued"] == batches
    assert queued() == batches
