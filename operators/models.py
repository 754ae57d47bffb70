"""Cellular operators: endpoints, credentials, limits and tariffs."""

from django.conf import settings
from django.db import models


class Operator(models.Model):
    """A cellular operator that receives batches (or area broadcasts) through an adapter."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=40, unique=True)
    # E.164 digit prefixes routed to this operator, e.g. ["62811", "62812"]; longest match wins.
    prefixes = models.JSONField(default=list, blank=True)
    adapter = models.CharField(max_length=40, default="http_batch_v1")
    base_url = models.URLField(blank=True)
    # Credentials we present to the operator; they must be readable to sign requests.
    api_key = models.CharField(max_length=200, blank=True)
    signing_secret = models.CharField(max_length=200, blank=True)
    segments_per_second = models.PositiveIntegerField(default=100)
    batch_size = models.PositiveIntegerField(default=1000)
    tariff_per_segment = models.PositiveIntegerField(default=250, help_text="Rupiah per SMS segment.")
    active = models.BooleanField(default=True)
    # Training ("exercise") area broadcasts go only to operators marked as test endpoints.
    is_test_endpoint = models.BooleanField(default=False)
    # Most polygon points the operator accepts for an area broadcast.
    vertex_limit = models.PositiveIntegerField(default=250)
    # The operator's API identity for the inbound API (delivery reports, pull mode, MO messages).
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="operator"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """Return the Celery queue that carries this operator's batches."""
        return f"dispatch.{self.slug}"
