"""Each command's description and examples for its --help, in one place as a man page's
EXAMPLES section is: the components register options, this says what a command is for and
how it is called. tests/ops/test_cli_help.py fails for a command that has none here.

Strings only: `lanesync agent` imports this and nothing more (tests/ops/test_lean_agent.py).
A command whose parser already has a description keeps it; its examples are added after any
epilog it has.
"""

from __future__ import annotations

# "command path": (description, examples). Examples are whole command lines.
HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    # --- on a lane -------------------------------------------------------------------------
    "agent": (
        "Run the store agent for one lane: it journals the till's documents, serves the local "
        "API, and forwards the journal to head office through the broker. systemd runs it as "
        "lanesync-agent.service; SIGTERM stops it cleanly.",
        ("lanesync agent --config /etc/lanesync/agent.toml",),
    ),
    "journal": (
        "Inspect a lane's journal (the SQLite file of every confirmed document): check it, "
        "show its last entries, or export its unacked backlog to a USB stick.",
        ("lanesync journal verify", "lanesync journal tail -n 50"),
    ),
    "journal verify": (
        "Check the journal's SQLite integrity and its hash chain, entry by entry. Safe while "
        "the agent runs. Exit 0 intact, 1 damaged (the fault is printed).",
        ("lanesync journal verify", "lanesync journal verify --path /var/lib/lanesync/journal.db"),
    ),
    "journal tail": (
        "Show the last entries of the journal: seq, time, kind, register, total (as money), "
        "txn id and whether head office acknowledged it. Through a pipe the table is "
        "tab-separated and never cut.",
        ("lanesync journal tail -n 50", "lanesync journal tail --json | jq '.[].txn_id'"),
    ),
    "journal export": (
        "Write the lane's unacked backlog to a signed file, for a store whose link is down "
        "for days: carry it to head office and run `lanesync import FILE` there.",
        ("lanesync journal export --out /media/usb",),
    ),
    "status": (
        "This lane's health in one screen: agent running, broker link, head office's version, "
        "backlog, last ack, disk, catalog, scanners. Works with the agent stopped (it reads "
        "the journal read-only). Exit 0 healthy, 1 a problem, 3 the agent is not running.",
        ("lanesync status", "lanesync status --json"),
    ),
    "doctor": (
        "Check what a lane needs, one line each with a fix: config, certificates, devices, "
        "disk, export key, the broker login, head office's version and the clock. Beside a "
        "running agent it reads the agent's own link instead of logging in a second time. "
        "Exit 0 nothing failed, 1 a check failed.",
        ("lanesync doctor", "lanesync doctor --offline", "lanesync doctor --json"),
    ),
    "scanners": (
        "List the configured and present barcode scanners and their state; `watch` shows live "
        "scans.",
        ("lanesync scanners", "lanesync scanners --json"),
    ),
    "scanners watch": (
        "Show live scans and scanner errors until Ctrl-C (or --count scans).",
        ("lanesync scanners watch", "lanesync scanners watch --count 5 --json"),
    ),
    # --- at head office --------------------------------------------------------------------
    "headoffice": (
        "Run head office's ingest (with no ACTION): it takes the lanes' journal batches from "
        "the broker into the database and answers their hellos and requests. The ACTIONs "
        "enrol stores, write the broker ACL, retire a lane's epoch and report health.",
        (
            "lanesync headoffice --config /etc/lanesync/headoffice.toml",
            "lanesync headoffice --worker 2",
            "lanesync headoffice status",
        ),
    ),
    "headoffice acl": (
        "",
        ("lanesync headoffice acl --from-catalog -o /etc/mosquitto/lanesync.acl",),
    ),
    "headoffice store": (
        "",
        ("lanesync headoffice store remove S002",),
    ),
    "headoffice store add": (
        "Register a store in the catalog's registry, issue each lane's broker identity, "
        "regenerate the ACL, and print each lane's agent.toml (secrets in separate files).",
        (
            "lanesync headoffice store add S002 --name 'Galway' --lanes L1,L2 "
            "--timezone Europe/Dublin --currency EUR",
        ),
    ),
    "headoffice store remove": (
        "Deactivate a store and revoke its lanes' identities (certificates into the CRL, "
        "password entries removed, ACL regenerated).",
        ("lanesync headoffice store remove S002",),
    ),
    "headoffice pki": (
        "The chain's stores CA that signs the lanes' client certificates.",
        ("lanesync headoffice pki init --name 'Example Stores CA'", "lanesync headoffice pki crl"),
    ),
    "headoffice pki init": (
        "Make the stores CA in [enrol] pki_dir, once, before the first `store add`.",
        ("lanesync headoffice pki init --name 'Example Stores CA'",),
    ),
    "headoffice pki crl": (
        "Re-sign the certificate revocation list; run it monthly (a timer), before it "
        "expires, or the broker refuses every lane.",
        ("lanesync headoffice pki crl",),
    ),
    "headoffice lane": (
        "",
        ("lanesync headoffice lane retire S001/L1 --epoch 3849575285460099843",),
    ),
    "headoffice lane retire": (
        "",
        ("lanesync headoffice lane retire S001/L1 --epoch 3849575285460099843 --note 'box swap'",),
    ),
    "headoffice status": (
        "",
        ("lanesync headoffice status", "lanesync headoffice status --workers 4 --json"),
    ),
    "import": (
        "Apply a lane's exported backlog file (from `lanesync journal export`) at head office. "
        "Importing the same file again changes nothing. Exit 0 applied, 1 refused (the reason "
        "is printed), 2 could not run.",
        ("lanesync import /media/usb/S001-L1-3849575285460099843.export",),
    ),
    "transits": (
        "Open transits (stock shipped between locations, by SSCC) at head office, or cancel "
        "one. Through a pipe the table is tab-separated and SSCCs are never cut.",
        (
            "lanesync transits",
            "lanesync transits --cancel 376012345000000017 --by 'j.smith'",
        ),
    ),
    "stock": (
        "Stock per location and item at head office, as the lanes' documents moved it.",
        ("lanesync stock --store S001", "lanesync stock --item P1000 --json"),
    ),
    "extract": (
        "Head office's extract to the ERP: purchase records, the daily roll-up and postings.",
        ("lanesync extract run", "lanesync extract run --json --no-deliver"),
    ),
    "extract run": (
        "Emit what is due now (or --as-of a time): purchase records, roll-ups, postings; then "
        "deliver them unless --no-deliver. Exit 1 when a source was rejected or a delivery "
        "failed.",
        ("lanesync extract run", "lanesync extract run --as-of 2026-03-01T06:00:00Z --json"),
    ),
    "extract record-posting": (
        "Record that the ERP posted a sale, with its corrections (needed when "
        "require_erp_posting is set), one at a time or a JSON Lines file of them.",
        (
            "lanesync extract record-posting --txn-id S001-L1-000042 --erp-ref INV-7781",
            "lanesync extract record-posting --file postings.jsonl",
        ),
    ),
    "held": (
        "Entries head office holds at their seq (a card number, a bad body, an unregistered "
        "store): list them, show one, release them after the fix, or void them. Their lanes "
        "go on meanwhile.",
        ("lanesync held list", "lanesync held show 17"),
    ),
    "held list": (
        "Held entries, one line each with the reason on the next; open ones unless --state.",
        ("lanesync held list", "lanesync held list --store S001 --state all --json"),
    ),
    "held show": (
        "One held entry in full, its body decoded (card numbers masked) and its total as money.",
        ("lanesync held show 17", "lanesync held show 17 --json"),
    ),
    "held release": (
        "Apply held entries once, after what held them was fixed (the store registered, say).",
        ("lanesync held release 17 18 --by j.smith --note 'store registered'",),
    ),
    "held void": (
        "Close held entries without applying them; the reason is kept.",
        ("lanesync held void 17 --reason 'test sale on a training till' --by j.smith",),
    ),
    "catalog": (
        "Head office's master data (items, prices, stores, ...), versioned: load a file as a "
        "new version, show the current rows, diff two versions, list or prune the history.",
        ("lanesync catalog load items items.csv", "lanesync catalog history"),
    ),
    "catalog load": (
        "Load a CSV or JSON Lines file as a new version of a dataset (the whole dataset, or "
        "--upsert rows into it); the lanes fetch it.",
        ("lanesync catalog load items items.csv", "lanesync catalog load prices p.jsonl --upsert"),
    ),
    "catalog show": (
        "A dataset's current rows, or those one store sees (--store).",
        ("lanesync catalog show prices --store S001", "lanesync catalog show items --json"),
    ),
    "catalog diff": (
        "What changed from version A to version B (0: from empty).",
        ("lanesync catalog diff 41 42", "lanesync catalog diff 0 42 --store S001 --json"),
    ),
    "catalog prune": (
        "Drop the history before a version; lanes older than it reload a snapshot.",
        ("lanesync catalog prune --keep 100", "lanesync catalog prune --before 40"),
    ),
    "catalog history": (
        "Every catalog version: when, what, how many rows.",
        ("lanesync catalog history", "lanesync catalog history --json"),
    ),
    # --- try and measure -------------------------------------------------------------------
    "demo": (
        "Two stores of two lanes each on this machine: sales, a WAN outage, price changes, "
        "then a reconciliation of what the lanes confirmed against what head office holds.",
        ("lanesync demo", "lanesync demo --broker nats --outage 10 --json"),
    ),
    "bench": (
        "Benchmarks: each prints JSON with its own in-run baseline or ceiling and the ratio.",
        ("lanesync bench drain --json", "lanesync bench extract --entries 40000 --json"),
    ),
    "bench all": (
        "Every benchmark in one run, one after the other, and the figures table made from it "
        "(each row with its baseline, ratio and aim); --readme rewrites README's table.",
        (
            "lanesync bench all --readme README.md --out bench-all.json",
            "lanesync bench all --only drain,start --quick",
        ),
    ),
    "bench api": (
        "Documents through the local API against journaling them directly.",
        ("lanesync bench api --docs 2000 --json",),
    ),
    "bench catalog": (
        "Master data down to the lanes: a new lane's initial load, a price change to every lane.",
        ("lanesync bench catalog --items 100000 --lanes 20 --json",),
    ),
    "bench drain": (
        "A running lane's backlog drained when its link opens, against SQLite's ceiling.",
        ("lanesync bench drain --entries 50000 --json",),
    ),
    "bench extract": (
        "The extract's roll-up and postings against a SQL GROUP BY baseline.",
        (
            "lanesync bench extract --entries 40000 --json",
            "lanesync bench extract --backend postgres",
        ),
    ),
    "bench fleet": (
        "Many lanes trickling, cut off, then draining into head office.",
        ("lanesync bench fleet --lanes 200 --json",),
    ),
    "bench lookup": (
        "Item lookups on the lane's catalog against a bare key read.",
        ("lanesync bench lookup --items 100000 --json",),
    ),
    "bench flood": (
        "One store flooding head office while honest lanes trickle: what the honest ones see.",
        ("lanesync bench flood --seconds 10 --json",),
    ),
    "bench start": (
        "The agent's start to READY and its memory, against its libraries alone.",
        ("lanesync bench start --runs 5 --json",),
    ),
    "bench transit": (
        "Transit receive round trips (lookup, accept) against an MQTT echo.",
        ("lanesync bench transit --requests 200 --json",),
    ),
}

# The top-level list (`lanesync`, `lanesync help`): commands by where they run.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("On a lane (store box)", ("agent", "status", "doctor", "journal", "scanners")),
    (
        "At head office",
        ("headoffice", "import", "held", "catalog", "extract", "transits", "stock"),
    ),
    ("Try and measure", ("demo", "bench")),
)
