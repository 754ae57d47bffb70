"""Officer and approver pages."""

from django.urls import path

from campaigns import views

app_name = "campaigns"

urlpatterns = [
    path("campaigns/", views.campaign_list, name="list"),
    path("campaigns/new/", views.campaign_create, name="create"),
    path("campaigns/import-cap/", views.campaign_cap_import, name="cap_import"),
    path("campaigns/areas/", views.area_search, name="area_search"),
    path("campaigns/preview/", views.compose_preview, name="preview"),
    path("campaigns/<int:pk>/", views.campaign_detail, name="detail"),
    path("campaigns/<int:pk>/edit/", views.campaign_edit, name="edit"),
    path("campaigns/<int:pk>/copy/", views.campaign_copy, name="copy"),
    path("campaigns/<int:pk>/review/", views.campaign_review, name="review"),
    path("campaigns/<int:pk>/runs/<int:run_pk>/progress/", views.run_progress_partial, name="run_progress"),
    path("campaigns/<int:pk>/state/", views.campaign_state_poll, name="state"),
    path("campaigns/<int:pk>/<slug:action>/", views.campaign_action, name="action"),
]
