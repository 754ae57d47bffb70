"""The worker command consumes the default queue and one dispatch queue per operator."""

import pytest
from django.core.management import call_command

from tests.operators.factories import OperatorFactory


@pytest.mark.django_db
def test_the_worker_consumes_default_and_every_operator_queue(capsys):
    OperatorFactory(slug="telkomsel")
    OperatorFactory(slug="xl", active=False)
    call_command("run_worker", "--print-queues")
    assert capsys.readouterr().out.strip() == "default,dispatch.telkomsel,dispatch.xl"
