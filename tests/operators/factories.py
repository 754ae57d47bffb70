"""Factories for operators."""

import factory
from factory.django import DjangoModelFactory

from operators.models import Operator


class OperatorFactory(DjangoModelFactory):
    """An active operator with its own prefix and credentials; `slug` is unique per sequence."""

    class Meta:
        model = Operator
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Operator {n}")
    slug = factory.Sequence(lambda n: f"op{n}")
    prefixes = factory.Sequence(lambda n: [f"62{880 + n % 100}"])
    adapter = "http_batch_v1"
    base_url = "http://127.0.0.1:9100"
    api_key = factory.Sequence(lambda n: f"key-{n}")
    signing_secret = factory.Sequence(lambda n: f"secret-{n}")
    segments_per_second = 100
    batch_size = 1000
    tariff_per_segment = 250
    active = True
