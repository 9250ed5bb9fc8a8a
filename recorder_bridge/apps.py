from django.apps import AppConfig


class RecorderBridgeConfig(AppConfig):
    name = "recorder_bridge"

    def ready(self):
        from calls.events import call_final
        from recorder_bridge.services import recordings_stop_for_call

        # A call that ends stops its recordings (a conversation is never recorded after).
        call_final.connect(recordings_stop_for_call, dispatch_uid="recordings_stop_for_call")
