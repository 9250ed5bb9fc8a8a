"""The call-final signal: sent once when a call reaches a final status (declined,
cancelled, missed, ended), by the transaction that made the change.

Packages that care (the recorder bridge stops the call's recordings) connect to it in
their AppConfig.ready(); `calls` itself knows none of them.
"""

from django.dispatch import Signal

call_final = Signal()  # sender: "calls"; keyword: call (the call document after the move)
