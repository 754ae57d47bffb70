"""Upgrading a database that holds data: the migrations with a data fill give existing rows what new rows get."""

import pytest

from smsblast.models import SubscriberImport
from tests.migrating import models_before

BEFORE_AREA_SCOPE = [("smsblast", "0006_auditevent_append_only")]


@pytest.mark.django_db(transaction=True)
def test_migrating_gives_each_earlier_import_the_area_scope_its_uploaders_role_and_jurisdiction_give():
    with models_before(BEFORE_AREA_SCOPE) as old:
        Area, User, Group = (
            old.get_model(*name) for name in (("smsblast", "Area"), ("smsblast", "User"), ("auth", "Group"))
        )
        OldImport = old.get_model("smsblast", "SubscriberImport")
        Area.objects.create(code="35", name="Jawa Timur", search_name="jawa timur", level="provinsi")
        Area.objects.create(code="35.05", name="Blitar", search_name="blitar", level="kabupaten", parent_id="35")
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in ("officer", "approver", "admin")}

        def user(username, *roles, jurisdiction="35.05", **fields):
            made = User.objects.create(username=username, jurisdiction_id=jurisdiction, **fields)
            made.groups.add(*(groups[role] for role in roles))
            return made

        uploaders = [
            user("officer", "officer"),
            user("approver", "approver"),
            user("officer_and_admin", "officer", "admin"),
            user("officer_and_approver", "officer", "approver"),
            user("admin", "admin"),
            user("superuser", "officer", is_superuser=True),
            user("unlimited", "officer", jurisdiction=None),
            None,
        ]
        for uploader in uploaders:
            OldImport.objects.create(file_path="/nowhere.csv", uploaded_by=uploader)

    scopes = list(SubscriberImport.objects.order_by("pk").values_list("area_scope", flat=True))
    assert scopes == ["35.05", "35.05", "35.05", "35.05", "", "", "", ""]


BEFORE_STOPPED = [("smsblast", "0016_subscriberimport_file_mtime_ns")]


@pytest.mark.django_db(transaction=True)
def test_migrating_gives_the_imports_an_officer_stopped_their_own_state_and_leaves_failed_ones_failed():
    stopped_error = "Stopped by an officer. The rows saved before stay; resuming goes on from there."
    with models_before(BEFORE_STOPPED) as old:
        OldImport = old.get_model("smsblast", "SubscriberImport")
        OldImport.objects.create(file_path="/a.csv", state="failed", error=stopped_error, lines_done=40)
        interrupted = "Interrupted: the worker running it stopped."
        OldImport.objects.create(file_path="/b.csv", state="failed", error=interrupted)
        OldImport.objects.create(file_path="/c.csv", state="completed")

    states = list(SubscriberImport.objects.order_by("pk").values_list("state", "error", "lines_done"))
    assert states == [
        ("stopped", "", 40),
        ("failed", "Interrupted: the worker running it stopped.", 0),
        ("completed", "", 0),
    ]
