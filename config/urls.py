from django.urls import path

from api.main import api

urlpatterns = [path("api/", api.urls)]

handler400 = "api.errors.django_bad_request"
handler403 = "api.errors.django_forbidden"
handler404 = "api.errors.django_not_found"
handler500 = "api.errors.django_server_error"
