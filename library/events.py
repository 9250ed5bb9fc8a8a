"""The recording-completed signal: sent when an app's upload is stored (`completed`).

Packages that care (analysis, with ANALYSIS_AUTO) connect to it in their
AppConfig.ready(); `library` knows none of them.
"""

from django.dispatch import Signal

recording_completed = Signal()  # sender: "library"; keyword: recording (the document)
