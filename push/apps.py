from django.apps import AppConfig


class PushConfig(AppConfig):
    name = "push"

    def ready(self):
        from push.services import providers_report

        providers_report()
