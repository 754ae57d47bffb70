from django.urls import path

from operators.api import DeliveryReportsView, OperatorBatchAckView, OperatorBatchClaimView, OperatorBatchListView
from operators.api_broadcast import AreaBroadcastReportsView, CampaignBroadcastView

urlpatterns: list = [
    path("operator/delivery-reports/", DeliveryReportsView.as_view(), name="operator-delivery-reports"),
    path("operator/batches/", OperatorBatchListView.as_view(), name="operator-batches"),
    path("operator/batches/<uuid:batch_id>/claim/", OperatorBatchClaimView.as_view(), name="operator-batch-claim"),
    path("operator/batches/<uuid:batch_id>/ack/", OperatorBatchAckView.as_view(), name="operator-batch-ack"),
    path(
        "operator/area-broadcast-reports/",
        AreaBroadcastReportsView.as_view(),
        name="operator-area-broadcast-reports",
    ),
    path("campaigns/<int:pk>/broadcast/", CampaignBroadcastView.as_view(), name="campaign-broadcast"),
]
