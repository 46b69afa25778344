"""URLs of the django-pyas2 baseline: pyas2's under /pyas2/ (POST /pyas2/as2receive receives)."""

from django.urls import include, path

urlpatterns = [path("pyas2/", include("pyas2.urls"))]
