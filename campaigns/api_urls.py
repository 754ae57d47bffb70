from django.urls import path
from rest_framework.routers import SimpleRouter

from campaigns.api import CampaignViewSet
from campaigns.api_cap import CampaignCapView, CapImportView

router = SimpleRouter()
router.register("campaigns", CampaignViewSet, basename="campaign")

urlpatterns: list = [
    # The reports are files: served without the trailing slash the router adds.
    path("campaigns/<int:pk>/report.csv", CampaignViewSet.as_view({"get": "report_csv"}), name="campaign-report-csv"),
    path("campaigns/<int:pk>/areas.csv", CampaignViewSet.as_view({"get": "areas_csv"}), name="campaign-areas-csv"),
    *router.urls,
    path("campaigns/<int:pk>/cap.xml", CampaignCapView.as_view(), name="campaign-cap"),
    path("cap/", CapImportView.as_view(), name="cap-import"),
]
