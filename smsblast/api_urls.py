from django.urls import path

from smsblast.api_views import TextAnalyzeView

urlpatterns: list = [
    path("sms/analyze/", TextAnalyzeView.as_view(), name="sms-analyze"),
]
