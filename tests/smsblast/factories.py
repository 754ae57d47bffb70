"""Factories for the core records: users with a role, areas and subscribers."""

import factory
from factory.django import DjangoModelFactory

from smsblast.models import Area, AreaLevel, Role, Subscriber, User
from smsblast.text import search_key

_LEVEL_BY_DEPTH = {1: AreaLevel.PROVINSI, 2: AreaLevel.KABUPATEN, 3: AreaLevel.KECAMATAN, 4: AreaLevel.DESA}


class UserFactory(DjangoModelFactory):
    """A user in one role group (`role=`, officer by default) with the password "pw-secret-123"."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        user = model_class.objects.filter(username=kwargs["username"]).first()
        return user or model_class.objects.create_user(*args, password="pw-secret-123", **kwargs)

    @factory.post_generation
    def role(obj, create, extracted, **kwargs):
        from smsblast.roles import user_role_set

        if create:
            user_role_set(user=obj, role=extracted or Role.OFFICER)


def _parent_of(code: str) -> Area | None:
    if "." not in code:
        return None
    parent_code = code.rsplit(".", 1)[0]
    return Area.objects.filter(code=parent_code).first()


class AreaFactory(DjangoModelFactory):
    """An area whose level follows the depth of its code and whose parent is linked when it exists.

    Create ancestors first (`AreaFactory(code="35")`, then `"35.05"`) for a connected tree.
    """

    class Meta:
        model = Area
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"35.{n % 100:02d}" if n < 100 else f"36.{n % 100:02d}")
    name = factory.Sequence(lambda n: f"Area {n}")
    search_name = factory.LazyAttribute(lambda o: search_key(o.name))
    level = factory.LazyAttribute(lambda o: _LEVEL_BY_DEPTH[len(o.code.split("."))])
    parent = factory.LazyAttribute(lambda o: _parent_of(o.code))


def area_tree(regency: str = "35.05", kecamatan: int = 3) -> list[Area]:
    """Create a province, one regency and `kecamatan` districts below it; return [province, regency, *districts]."""
    province = AreaFactory(code=regency.split(".")[0], name="Jawa Timur")
    regency_area = AreaFactory(code=regency, name="Kabupaten Blitar")
    districts = [AreaFactory(code=f"{regency}.{i:02d}", name=f"Kecamatan {i}") for i in range(1, kecamatan + 1)]
    return [province, regency_area, *districts]


class SubscriberFactory(DjangoModelFactory):
    """A subscriber with a unique +62812… number; pass `area` and `operator` as needed."""

    class Meta:
        model = Subscriber

    msisdn = factory.Sequence(lambda n: f"+62812{n:08d}")
    area = None
    operator = None
    language = "id"
