from django.urls import path
from rest_framework.routers import SimpleRouter

from campaigns.api import CampaignViewSet

router = SimpleRouter()
router.register("campaigns", CampaignViewSet, basename="campaign")

urlpatterns: list = [
    # The report is a file: served without the trailing slash the router adds.
    path("campaigns/<int:pk>/report.csv", CampaignViewSet.as_view({"get": "report_csv"}), name="campaign-report-csv"),
    *router.urls,
]
