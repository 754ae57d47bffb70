"""End to end: a real celery beat and a worker on the control queue alone start a due run, whatever the other
workers are doing; the main workers then fan it out and send it.
"""

import pytest

from campaigns.models import Campaign, CampaignRun, Delivery
from tests.integration.scenario import (
    all_final,
    campaign_send_now,
    deliveries_by_status,
    operators_create,
    run_finished,
    run_of,
    subscribers_create,
)

pytestmark = pytest.mark.integration


def test_beat_and_the_control_worker_start_a_due_run_that_the_main_workers_then_send(stack):
    operators = operators_create(stack, segments_per_second=1000, batch_size=50)
    subscribers_create(operators, 120)
    campaign = campaign_send_now()
    assert campaign.status == Campaign.Status.SCHEDULED

    # No worker takes the default or dispatch queues yet: only beat's housekeeping can move anything.
    stack.start_workers("control", concurrency=1, queues=["control"])
    stack.start_beat()
    stack._wait(lambda: run_of(campaign) is not None, 30, f"beat and the control worker started no run\n{stack.logs()}")
    campaign.refresh_from_db()
    run = run_of(campaign)
    assert campaign.status == Campaign.Status.SENDING
    assert run.status == CampaignRun.Status.FANNING_OUT  # its fan-out waits on the default queue
    assert not Delivery.objects.filter(run=run).exists()

    stack.start_workers("main", concurrency=2, queues=["default", *(f"dispatch.{slug}" for slug in operators)])

    def all_sent() -> bool:
        run.refresh_from_db()
        deliveries = Delivery.objects.filter(run=run)
        return run.fanout_done and deliveries.count() == 120 and not deliveries.filter(batch__status="pending").exists()

    stack._wait(all_sent, 60, f"the main workers did not send the run\n{stack.logs()}")
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1  # beat kept ticking: still one run


def test_a_worker_started_before_its_operators_existed_sends_to_them_without_a_restart(stack):
    # Started with no operator at all: it consumes only the default and control queues at first.
    stack.start_run_worker("main", env={"WORKER_QUEUE_REFRESH_SECONDS": "0.5"})
    operators = operators_create(stack, segments_per_second=1000, batch_size=50)
    subscribers_create(operators, 120)
    campaign = campaign_send_now()

    stack.drive(lambda: all_final(campaign) and run_finished(campaign), timeout=60)

    assert sum(deliveries_by_status(campaign).values()) == 120
    stats = stack.stats()
    assert {slug: stats[slug]["messages"] for slug in operators} == {slug: 30 for slug in operators}


def test_the_dashboard_says_no_worker_runs_until_one_consuming_the_sending_queues_starts(stack):
    from django.urls import reverse

    from smsblast.health import health_mark_reconciled
    from smsblast.models import Role
    from tests.conftest import client_for, make_user

    client = client_for(make_user("admin-it", Role.ADMIN), language="en")

    def warned() -> bool:
        health_mark_reconciled()  # beat and the control process are up throughout
        return 'data-health="workers"' in client.get(reverse("dashboard")).content.decode()

    stack.start_workers("control", concurrency=1, queues=["control"])
    assert warned()  # beat's housekeeping alone sends nothing
    stack.start_workers("main", concurrency=1, queues=["default", "dispatch.telkomsel"])
    stack._wait(lambda: not warned(), 30, f"the dashboard still says no worker runs\n{stack.logs()}")
