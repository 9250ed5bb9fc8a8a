"""/ops/: the console's routes."""

from django.urls import path

from api.console import views

app_name = "console"

urlpatterns = [
    path("", views.now, name="now"),
    path("now.json", views.now_json, name="now_json"),
    path("sign-in", views.sign_in, name="sign_in"),
    path("sign-out", views.sign_out, name="sign_out"),
    path("calls", views.calls, name="calls"),
    path("calls/<str:call_id>", views.call_detail, name="call"),
    path("calls/<str:call_id>/review", views.call_review_post, name="review"),
    path("recordings", views.recordings, name="recordings"),
    path("recordings/<str:recording_id>/stream", views.recording_stream, name="stream"),
    path("recordings/<str:recording_id>/download", views.recording_download,
         name="download"),
    path("recordings/<str:recording_id>/retry", views.recording_retry, name="retry"),
    path("recordings/<str:recording_id>/delete", views.recording_delete, name="delete"),
    path("audit", views.access_log, name="audit"),
    path("sweep", views.sweep, name="sweep"),
]
