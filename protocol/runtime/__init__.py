"""The shared runtime: what both daemons run on, as opposed to what they say to each other.

Broker connection, reconnect factory and TLS (`brokerconn`), the TOML `Table` (`config`),
logging with card numbers redacted (`logsetup`), sd_notify and the watchdog (`notify`,
`watchdog`), the wall clock and the clock-skew formula (`clock`), the one migration runner for
SQLite and PostgreSQL (`migrations`), the HTTP listener for metrics and status (`httpserver`),
a daemon's operations side held as one (`services`), the exit codes of the technician's
commands (`cli`), the task runner of every long-lived component (`tasks`) and the release
(`version`). These modules do I/O; the pure contract in `protocol` never imports them.
"""
