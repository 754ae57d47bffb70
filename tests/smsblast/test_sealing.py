"""Secrets the server reads back are sealed at rest: a copy of the database does not give them away."""

import pytest
from django.db import connection
from django.utils import timezone

from campaigns import dispatch
from campaigns.models import Campaign, DispatchBatch
from operators import services
from operators.models import Operator
from smsblast import sealing, totp
from smsblast.models import TwoFactorDevice
from tests.migrating import models_before
from tests.operators.factories import OperatorFactory
from tests.operators.scripted import ScriptedAdapter, approved_campaign, operators_and_subscribers, sending_run
from tests.smsblast.factories import UserFactory

BEFORE_SEALING = [("operators", "0005_choice_labels"), ("smsblast", "0011_two_factor_device")]


def stored(model, pk, *columns) -> tuple:
    """Return the columns of one row as the database holds them, bypassing the fields."""
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()


def test_a_sealed_value_opens_to_itself_and_shows_nothing_of_it():
    first, second = sealing.seal("key-telkomsel-7Hq"), sealing.seal("key-telkomsel-7Hq")

    assert first.startswith("sealed:v1:") and "7Hq" not in first
    assert first != second  # a fresh nonce each time: equal secrets do not show as equal
    assert sealing.unseal(first) == sealing.unseal(second) == "key-telkomsel-7Hq"
    assert sealing.seal("") == "" and sealing.unseal("") == "" and sealing.unseal(None) is None


@pytest.mark.django_db
def test_operator_credentials_are_sealed_in_the_database_and_read_in_clear():
    operator = OperatorFactory(api_key="key-xl-Zk31", signing_secret="whsec-xl-Pq88")

    api_key, signing_secret = stored(Operator, operator.pk, "api_key", "signing_secret")
    assert sealing.is_sealed(api_key) and "Zk31" not in api_key
    assert sealing.is_sealed(signing_secret) and "Pq88" not in signing_secret
    fresh = Operator.objects.get(pk=operator.pk)
    assert (fresh.api_key, fresh.signing_secret) == ("key-xl-Zk31", "whsec-xl-Pq88")
    assert Operator.objects.filter(pk=operator.pk).values_list("api_key", flat=True).get() == "key-xl-Zk31"


@pytest.mark.django_db
def test_a_second_factor_secret_is_sealed_in_the_database_and_codes_still_check():
    secret = totp.secret_new()
    device = TwoFactorDevice.objects.create(
        user=UserFactory(), secret=secret, confirmed_at=timezone.now(), last_used_step=0
    )

    (held,) = stored(TwoFactorDevice, device.pk, "secret")
    assert sealing.is_sealed(held) and secret not in held
    assert TwoFactorDevice.objects.get(pk=device.pk).secret == secret


@pytest.mark.django_db
def test_a_batch_is_sent_with_the_operators_credentials_in_clear(settings, redis_client, redis_url, private_broker):
    settings.REDIS_URL = redis_url
    ScriptedAdapter.reset()
    campaign = approved_campaign()
    (operator,) = operators_and_subscribers(counts={"isat": 3}).values()
    operator.api_key, operator.signing_secret = "key-isat-Wm2", "whsec-isat-Ry7"
    operator.save()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    run = sending_run(campaign)
    dispatch.run_fan_out(run_id=run.pk)
    batch = DispatchBatch.objects.get(run=run)

    assert services.batch_send(batch_id=batch.pk) == "accepted"
    (sent,) = ScriptedAdapter.sent
    assert (sent.api_key, sent.signing_secret) == ("key-isat-Wm2", "whsec-isat-Ry7")


@pytest.mark.django_db
def test_secrets_stay_readable_after_a_key_rotation_that_keeps_the_old_key_as_a_fallback(settings):
    operator = OperatorFactory(api_key="key-smartfren-Lv4")

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-key-for-this-test", [settings.SECRET_KEY]
    assert Operator.objects.get(pk=operator.pk).api_key == "key-smartfren-Lv4"

    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(sealing.SealedValueUnreadable, match="SECRET_KEY_FALLBACKS"):
        Operator.objects.get(pk=operator.pk)


@pytest.mark.django_db(transaction=True)
def test_migrating_seals_the_credentials_and_secrets_written_before_and_migrating_back_writes_them_in_clear():
    with models_before(BEFORE_SEALING) as old:
        OldOperator, OldDevice, OldUser = (
            old.get_model(*name)
            for name in (("operators", "Operator"), ("smsblast", "TwoFactorDevice"), ("smsblast", "User"))
        )
        operator = OldOperator.objects.create(name="Tri", slug="tri", api_key="key-tri-Ab1", signing_secret="sec-Cd2")
        empty = OldOperator.objects.create(name="Log", slug="log", adapter="log")
        user = OldUser.objects.create(username="approver-before")
        device = OldDevice.objects.create(
            user=user, secret="JBSWY3DPEHPK3PXP", confirmed_at=timezone.now(), last_used_step=1
        )

    api_key, signing_secret = stored(Operator, operator.pk, "api_key", "signing_secret")
    assert sealing.is_sealed(api_key) and sealing.is_sealed(signing_secret)
    assert "Ab1" not in api_key and "Cd2" not in signing_secret
    assert (Operator.objects.get(pk=operator.pk).api_key, Operator.objects.get(pk=operator.pk).signing_secret) == (
        "key-tri-Ab1",
        "sec-Cd2",
    )
    assert stored(Operator, empty.pk, "api_key", "signing_secret") == ("", "")
    assert sealing.is_sealed(stored(TwoFactorDevice, device.pk, "secret")[0])
    assert TwoFactorDevice.objects.get(pk=device.pk).secret == "JBSWY3DPEHPK3PXP"

    with models_before(BEFORE_SEALING):
        assert stored(Operator, operator.pk, "api_key", "signing_secret") == ("key-tri-Ab1", "sec-Cd2")
        assert stored(TwoFactorDevice, device.pk, "secret") == ("JBSWY3DPEHPK3PXP",)
