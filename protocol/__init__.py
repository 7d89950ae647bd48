"""The contract the store agent and head office share.

Two parts:

- this package's modules are the **pure** part: message types and the strict msgpack codec,
  topic names, lane identity, the journal hash chain, the document schema, the card-number
  screen and the catalog's datasets. They do no I/O (no sockets, files, clocks or logging) and
  import nothing of the project outside `protocol`, so both sides and every test can use them.
- `protocol.runtime` is the **shared runtime**: the broker connection, TLS, the TOML `Table`,
  logging, sd_notify and the watchdog, schema migrations, the task runner every long-lived
  component uses. It does I/O and may import the pure part, never the other way round.

import-linter contracts in pyproject.toml keep it so.
"""
