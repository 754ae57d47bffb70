from django.contrib.auth import views as auth_views
from django.urls import path

from campaigns.views import dashboard
from smsblast import views
from smsblast.forms import LoginForm

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("login/", views.TwoFactorLoginView.as_view(authentication_form=LoginForm), name="login"),
    path("login/code/", views.login_code, name="login_code"),
    path("login/enrol/", views.login_enrol, name="login_enrol"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("subscribers/", views.subscribers, name="subscribers"),
    path("subscribers/imports/<int:pk>/", views.subscriber_import_status, name="subscriber_import"),
    path("subscribers/imports/<int:pk>/resume/", views.subscriber_import_resume, name="subscriber_import_resume"),
    path("subscribers/imports/<int:pk>/stop/", views.subscriber_import_stop, name="subscriber_import_stop"),
    path("operators/", views.operators, name="operators"),
]
