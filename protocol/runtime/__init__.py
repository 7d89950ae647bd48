"""The shared runtime: what both daemons run on, as opposed to what they say to each other.

Broker connection and TLS (`brokerconn`), the TOML `Table` (`config`), logging with card
numbers redacted (`logsetup`), sd_notify and the watchdog (`notify`, `watchdog`), schema
migrations (`migrations`), the task runner of every long-lived component (`tasks`) and the
release (`version`). These modules do I/O; the pure contract in `protocol` never imports them.
"""
