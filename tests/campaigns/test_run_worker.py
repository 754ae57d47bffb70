"""The worker command consumes the default and control queues and one dispatch queue per operator."""

import pytest
from django.core.management import call_command

from tests.operators.factories import OperatorFactory


@pytest.mark.django_db
def test_the_worker_consumes_default_control_and_every_operator_queue(capsys):
    OperatorFactory(slug="telkomsel")
    OperatorFactory(slug="xl", active=False)
    call_command("run_worker", "--print-queues")
    assert capsys.readouterr().out.strip() == "default,control,dispatch.telkomsel,dispatch.xl"


@pytest.mark.django_db
def test_a_worker_can_be_given_only_some_queues(capsys):
    OperatorFactory(slug="telkomsel")
    call_command("run_worker", "--queues", "control", "--print-queues")
    assert capsys.readouterr().out.strip() == "control"
