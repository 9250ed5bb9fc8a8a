from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"

    def ready(self):
        from analysis.services import analysis_auto_for_recording
        from library.events import recording_completed

        # ANALYSIS_AUTO: an app's upload that is stored gets its job at once (the recorder's
        # recordings, written by another process, are found by the sweep instead).
        recording_completed.connect(analysis_auto_for_recording,
                                    dispatch_uid="analysis_auto_for_recording")
