"""The worker command consumes the default and control queues and one dispatch queue per operator."""

import pytest
from django.core.management import CommandError, call_command

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


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool", "bogus"], "'bogus' is not one of 'prefork'"),
        (["--concurrency", "-1"], "must be a non-negative integer"),
        (["--", "--bogus-flag"], "No such option '--bogus-flag'"),
    ],
)
def test_a_worker_option_celery_refuses_is_a_command_error_not_a_traceback(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("run_worker", *args)
