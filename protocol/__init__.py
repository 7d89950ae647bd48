"""The contract the store agent and head office share.

Two parts:

- this package's modules are the **pure** part: message types and the strict msgpack codec
  (`messages`, `codec`), lane identity and topic names (`identity`), the journal hash chain
  (`chain`), the document schema (`documents`), the card-number screen (`pan`, `screen`), the
  catalog's datasets (`catalog`), money arithmetic (`money`), the signed export file
  (`exportfile`), request operations and refusal codes (`requests`) and the root error
  (`errors`). They do no I/O (no sockets, files, clocks or logging) and import nothing of the
  project outside `protocol`, so both sides and every test can use them.
- `protocol.runtime` is the **shared runtime**: the broker connection, TLS, the TOML `Table`,
  logging, sd_notify and the watchdog, the clock, the migration runner, the HTTP listener for
  metrics and status, the task runner every long-lived component uses. It does I/O and may
  import the pure part, never the other way round.

import-linter contracts in pyproject.toml keep it so.
"""
