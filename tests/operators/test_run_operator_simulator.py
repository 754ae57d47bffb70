"""What `manage.py run_operator_simulator` serves: every operator in the database, reports with its own token."""

from operators.management.commands.run_operator_simulator import simulator_operators
from operators.simulator import OperatorBehaviour
from smsblast.models import Role
from tests.conftest import make_user
from tests.operators.factories import OperatorFactory


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
