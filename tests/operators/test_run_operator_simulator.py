"""What `manage.py run_operator_simulator` serves: every operator in the database, reports with its own token."""

import io
import json
import re
import socket
import time

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from operators import signing
from operators.management.commands.run_operator_simulator import simulator_operators, simulator_server
from operators.simulator import OperatorBehaviour, SimulatorServer
from smsblast.models import ApiToken, Role
from tests.conftest import make_user
from tests.operators.factories import OperatorFactory
from tests.operators.test_simulator import batch_document, post_batch


def test_every_operator_is_served_with_its_credentials_and_users_get_a_working_report_token(db, client):
    user = make_user("tsel-api", Role.OPERATOR)
    OperatorFactory(slug="telkomsel", api_key="k-tsel", signing_secret="s-tsel", user=user)
    OperatorFactory(slug="xl", api_key="k-xl", signing_secret="s-xl")

    configs = simulator_operators(behaviour=OperatorBehaviour(latency_ms=5))

    assert sorted(configs) == ["telkomsel", "xl"]
    assert (configs["telkomsel"].api_key, configs["telkomsel"].signing_secret) == ("k-tsel", "s-tsel")
    assert configs["xl"].report_token is None
    assert configs["telkomsel"].behaviour.latency_ms == 5
    # The token authenticates as the operator's user on the delivery-report endpoint.
    response = client.post(
        "/api/v1/operator/delivery-reports/",
        {"reports": []},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {configs['telkomsel'].report_token}",
    )
    assert response.status_code not in (401, 403)
    forged = client.post(
        "/api/v1/operator/delivery-reports/",
        {"reports": []},
        content_type="application/json",
        HTTP_AUTHORIZATION="Bearer not-a-token",
    )
    assert forged.status_code == 401


@pytest.fixture
def demo_operators(db):
    OperatorFactory(slug="telkomsel", api_key="k-tsel", signing_secret="s-tsel")
    OperatorFactory(slug="xl", api_key="k-xl", signing_secret="s-xl")


def test_each_operator_can_start_with_its_own_settings_and_an_outage(demo_operators):
    server = simulator_server(
        port=0, latency_ms=5, control=['xl={"throttle_sps": 300, "outage_seconds": 600, "outage_mode": "refuse"}']
    )
    with server:
        counted = requests.get(f"{server.url}/stats", timeout=10).json()
        batch = json.dumps({"batch_id": "b-1"}).encode()
        timestamp = int(time.time())
        with pytest.raises(requests.ConnectionError):
            requests.post(
                f"{server.url}/xl/v1/batches",
                data=batch,
                headers={
                    "Authorization": "Bearer k-xl",
                    "Idempotency-Key": "b-1",
                    "X-Smsblast-Timestamp": str(timestamp),
                    "X-Smsblast-Signature": signing.sign("s-xl", timestamp, batch),
                },
                timeout=10,
            )
    assert counted["xl"]["outage"]["mode"] == "refuse"
    assert counted["xl"]["outage"]["seconds_left"] > 0
    assert (counted["xl"]["behaviour"]["throttle_sps"], counted["xl"]["behaviour"]["latency_ms"]) == (300, 5)
    assert counted["telkomsel"]["outage"]["seconds_left"] == 0
    assert counted["telkomsel"]["behaviour"]["throttle_sps"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"error_rate": 5}, "error_rate must be between 0 and 1."),
        ({"latency_ms": -3}, "latency_ms must be a non-negative number."),
        ({"control": ['xl={"outage_mode": "down"}']}, 'xl: outage_mode must be "503" or "refuse".'),
        ({"control": ['smartfren={"latency_ms": 1}']}, "unknown operator 'smartfren'"),
        ({"control": ["xl=latency_ms:1"]}, "as JSON"),
        ({"report_threads": 0}, "--report-threads 0: give at least 1, or no delivery report is ever sent."),
    ],
)
def test_settings_at_start_are_checked_as_control_checks_them(demo_operators, options, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        simulator_server(port=0, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"error_rate": 5}, "--error-rate 5: error_rate must be between 0 and 1."),
        ({"throttle_sps": -1}, "--throttle-sps -1: throttle_sps must be a non-negative number."),
        ({"report_delay_ms": float("nan")}, "--report-delay-ms nan: report_delay_ms must be a non-negative number."),
    ],
)
def test_a_bad_option_is_refused_by_its_name_while_no_operator_exists_yet(db, options, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        simulator_server(port=0, **options)


def test_the_command_refuses_a_bad_setting_before_serving(demo_operators):
    with pytest.raises(CommandError, match=re.escape("xl: delivered_ratio must be between 0 and 1.")):
        call_command("run_operator_simulator", "--port", "0", "--control", 'xl={"delivered_ratio": 3}')


def test_the_command_refuses_production_settings_and_issues_no_operator_token(db, settings, monkeypatch):
    user = make_user("tsel-api", Role.OPERATOR)
    OperatorFactory(slug="telkomsel", api_key="k-tsel", signing_secret="s-tsel", user=user)
    settings.DEMO_DATA_ALLOWED = False  # as config.settings.prod sets it
    served = []
    monkeypatch.setattr(SimulatorServer, "serve_forever", lambda server: served.append(server))

    with pytest.raises(CommandError, match="development only"):
        call_command("run_operator_simulator", "--port", "0")

    assert served == []
    assert not ApiToken.objects.filter(user=user).exists()


@pytest.fixture
def operator_with_user(db):
    user = make_user("tsel-api", Role.OPERATOR)
    OperatorFactory(slug="telkomsel", api_key="k-tsel", signing_secret="s-tsel", user=user)
    return user


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--control", 'telkomsel={"delivered_ratio": 3}'], "delivered_ratio must be between 0 and 1."),
        (["--control", "nobody={}"], "unknown operator 'nobody'"),
        (["--port", "70000"], "Cannot listen on 127.0.0.1:70000"),
    ],
)
def test_a_start_refused_leaves_no_live_report_token(operator_with_user, options, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("run_operator_simulator", "--port", "0", *options)

    assert not ApiToken.objects.filter(user=operator_with_user, revoked_at__isnull=True).exists()


def test_stopping_the_simulator_revokes_the_report_tokens_it_issued(operator_with_user, monkeypatch):
    served = []
    # Returns at once, as serve_forever does on Ctrl-C.
    monkeypatch.setattr(SimulatorServer, "serve_forever", lambda server: served.append(server))

    call_command("run_operator_simulator", "--port", "0", stdout=io.StringIO())

    assert len(served) == 1
    issued = ApiToken.objects.get(user=operator_with_user)
    assert issued.revoked_at is not None


def test_a_port_in_use_is_refused_with_a_clear_message(demo_operators):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"Cannot listen on 127.0.0.1:{port}"):
            simulator_server(port=port)


def test_a_port_out_of_range_is_refused_with_a_clear_message(demo_operators):
    with pytest.raises(CommandError, match="Cannot listen on 127.0.0.1:70000"):
        simulator_server(port=70000)


def test_an_operator_added_while_the_simulator_serves_is_served_without_a_restart(transactional_db):
    OperatorFactory(slug="telkomsel", api_key="k-tsel", signing_secret="s-tsel")
    server = simulator_server(port=0, latency_ms=5)
    with server:
        # Added in the admin after the simulator started, pointed at it, as under `make run`.
        OperatorFactory(slug="byu", api_key="k-byu", signing_secret="s-byu")

        answer = post_batch(server.url, batch_document("b-1"), slug="byu", key="k-byu", secret="s-byu")
        unknown = post_batch(server.url, batch_document("b-2"), slug="nobody", key="k-byu", secret="s-byu")
        counted = requests.get(f"{server.url}/stats", timeout=10).json()

    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 3
    assert (counted["byu"]["messages"], counted["byu"]["behaviour"]["latency_ms"]) == (3, 5)
    assert unknown.status_code == 404


def test_a_key_and_secret_replaced_while_the_simulator_serves_are_taken_without_a_restart(transactional_db):
    operator = OperatorFactory(slug="telkomsel", api_key="k-old", signing_secret="s-old")
    server = simulator_server(port=0)
    with server:
        # Replaced in the admin after the simulator started; the workers sign with the new ones from now on.
        operator.api_key, operator.signing_secret = "k-new", "s-new"
        operator.save(update_fields=["api_key", "signing_secret"])

        renewed = post_batch(server.url, batch_document("b-1"), slug="telkomsel", key="k-new", secret="s-new")
        stale = post_batch(server.url, batch_document("b-2"), slug="telkomsel", key="k-old", secret="s-old")
        counted = requests.get(f"{server.url}/stats", timeout=10).json()

    assert renewed.status_code == 202, renewed.text
    assert stale.status_code == 401
    assert (counted["telkomsel"]["messages"], counted["telkomsel"]["unauthorized"]) == (3, 1)
