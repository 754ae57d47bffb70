from django.urls import path

from smsblast import api_audience
from smsblast.api_views import TextAnalyzeView

urlpatterns: list = [
    path("sms/analyze/", TextAnalyzeView.as_view(), name="sms-analyze"),
    path("areas/", api_audience.AreaListView.as_view(), name="area-list"),
    path("areas/<str:code>/", api_audience.AreaDetailView.as_view(), name="area-detail"),
    path("subscribers/", api_audience.SubscriberListView.as_view(), name="subscriber-list"),
    path("subscribers/imports/", api_audience.SubscriberImportListView.as_view(), name="subscriber-import-list"),
    path(
        "subscribers/imports/<int:pk>/",
        api_audience.SubscriberImportDetailView.as_view(),
        name="subscriber-import-detail",
    ),
    path(
        "subscribers/imports/<int:pk>/resume/",
        api_audience.SubscriberImportResumeView.as_view(),
        name="subscriber-import-resume",
    ),
    path(
        "subscribers/imports/<int:pk>/stop/",
        api_audience.SubscriberImportStopView.as_view(),
        name="subscriber-import-stop",
    ),
    path(
        "subscribers/imports/<int:pk>/rejected.csv",
        api_audience.SubscriberImportRejectedView.as_view(),
        name="subscriber-import-rejected",
    ),
    path("subscribers/<str:msisdn>/opt-out/", api_audience.SubscriberOptOutView.as_view(), name="subscriber-opt-out"),
    path("subscribers/<str:msisdn>/opt-in/", api_audience.SubscriberOptInView.as_view(), name="subscriber-opt-in"),
    path("operator/inbound/", api_audience.OperatorInboundView.as_view(), name="operator-inbound"),
    path("audience/preview/", api_audience.AudiencePreviewView.as_view(), name="audience-preview"),
    path("campaigns/<int:pk>/audience/", api_audience.CampaignAudienceView.as_view(), name="campaign-audience"),
]
