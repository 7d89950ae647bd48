"""Documents on their way into the journal: submission, register numbers, open sales and transits.

`store` keeps lane-local state in the journal database (open documents, counters), `service`
validates, numbers and journals a document, `sales` runs open sales and transit mode (setmode 8).
"""
