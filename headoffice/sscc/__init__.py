"""SSCC serials leased to lanes in blocks (issue 15 item 5): the `sscc_lease` request.

Head office is the one place that knows every serial ever handed out, so a recreated journal
(a new epoch) or a replaced box never prints an SSCC a parcel already carries.
"""
