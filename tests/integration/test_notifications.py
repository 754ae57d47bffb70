"""End to end: a submit commits, a real Celery worker emails the approver through the configured mail backend."""

import pytest

from campaigns.services import campaign_submit
from smsblast.models import Notification, Role
from tests.campaigns.factories import CampaignFactory
from tests.smsblast.factories import UserFactory, area_tree

pytestmark = pytest.mark.integration


def test_a_worker_emails_the_approver_of_a_submitted_campaign_once_the_submit_commits(stack, tmp_path):
    mail = tmp_path / "mail"
    stack.env["EMAIL_URL"] = f"filemail:///{mail}"  # django-environ drops one leading slash
    stack.start_workers("main", concurrency=1, queues=["mail"])
    area_tree("35.05", kecamatan=1)
    UserFactory(username="chair", role=Role.APPROVER, email="chair@blitarkab.go.id")
    author = UserFactory(username="ofc", role=Role.OFFICER)
    campaign = CampaignFactory(author=author, title="Update Covid-19 Blitar")

    campaign_submit(campaign=campaign, actor=author)

    def sent() -> bool:
        return Notification.objects.filter(status=Notification.Status.SENT).exists()

    stack._wait(sent, 30, f"the worker sent no notification\n{stack.logs()}")
    (message,) = [path.read_text() for path in mail.iterdir()]
    assert "To: chair@blitarkab.go.id" in message
    assert "Subject: Menunggu persetujuan Anda: Update Covid-19 Blitar" in message
    assert f"/campaigns/{campaign.pk}/review/" in message
    assert Notification.objects.get().attempts == 1
