"""Head-office status page: stores and lanes, online, backlog, lag, gaps, quarantine, held
entries, transits, the catalog (each lane's version against its store's head, and which
lanes lag behind it), and what this process's ingest shed or refused.

`collect` reads the head-office database read-only (so it never competes with the ingest
writer), the SQLite file or PostgreSQL (`database.url`), and returns plain data; `/api/status`
serves it as JSON, `/` as a page that fetches
`/fragment` (the same data rendered and escaped here, one renderer) every `refresh_s` seconds.
Without JavaScript the page falls back to a meta refresh.

In the head-office process the page also knows the live ingest (`live_view`): when ingest has
lost its broker link a banner says so first and lanes the database last saw online show as
"unknown" (issue 16.4b: green while nothing arrives would be a lie), and each lane's proof from
its last hello says whether both sides hold the same chain (issue 16.7): "identical up to seq
N", where they differ, a head office restored from an older copy, or a refused journal.

Its queries stay linear in what is on record: one pass over `lanes` picks each lane's latest
epoch and counts its epochs (a correlated max() per row made 11,300 epochs take 29 s), and
quarantine and held rows are read by index.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from headoffice.catalog import http as catalog_http
from headoffice.catalog import versions
from headoffice.catalog.publisher import PublisherStats
from headoffice.config import CatalogConfig
from headoffice.db import DatabaseError, Target, describe, open_readonly
from headoffice.db.sql import Sql
from headoffice.ingest import IngestStats
from headoffice.transit import report as transit_report
from protocol import catalog as cat
from protocol.messages import SUPPORTED_VERSIONS
from protocol.runtime.version import VERSION

TransitSource = Callable[[Sql], list[dict[str, Any]]]
RECENT = 20

# The current epoch of each lane (the latest by last_seen that is not retired: a replaced till
# box's epoch never is, headoffice/retire.py) and how many epochs it has on record, in one pass
# over `lanes`. PostgreSQL: a window per lane. SQLite: the same window sorts every row (0.9 s
# for 100,000 epochs on the dev machine); its aggregate with one max() takes the other ("bare")
# columns from the row holding the max, documented at
# https://sqlite.org/lang_select.html#bare_columns_in_an_aggregate_query, so GROUP BY walks
# the primary key in order and sorts nothing (0.08 s). While any epoch is retired, each lane
# row joins `retired_epochs` and an epoch not retired ranks first (SQLite: its last_seen, ms,
# plus 2**62 in the max()); a lane whose epochs are all retired picks a retired one, which
# `collect` shows as no current epoch. With none retired (most days, and before schema 8) the
# queries join nothing, so the page costs what it did.
_LANES_PG = """
    SELECT x.store, x.lane, x.epoch, x.hwm, x.lane_last_seq, x.gaps, x.last_seen,
           s.state, s.backlog, s.at, s.version, x.epochs, x.retired, x.retired_epochs
    FROM (SELECT l.store, l.lane, l.epoch, l.hwm, l.lane_last_seq, l.gaps, l.last_seen,
                 {retired} AS retired,
                 row_number() OVER (PARTITION BY l.store, l.lane
                                    ORDER BY {first}l.last_seen DESC, l.epoch DESC) AS pick,
                 count(*) OVER (PARTITION BY l.store, l.lane) AS epochs,
                 {count} AS retired_epochs
          FROM lanes l {join}) x
    LEFT JOIN lane_status s ON s.store = x.store AND s.lane = x.lane
    WHERE x.pick = 1
    ORDER BY x.store, x.lane
"""
_LANES_SQLITE = """
    SELECT x.store, x.lane, x.epoch, x.hwm, x.lane_last_seq, x.gaps, x.last_seen,
           s.state, s.backlog, s.at, s.version, x.epochs, x.retired, x.retired_epochs
    FROM (SELECT l.store, l.lane, l.epoch, l.hwm, l.lane_last_seq, l.gaps, l.last_seen,
                 {rank} AS rank, {retired} AS retired, count(*) AS epochs,
                 {count} AS retired_epochs
          FROM lanes l {join} GROUP BY l.store, l.lane) x
    LEFT JOIN lane_status s ON s.store = x.store AND s.lane = x.lane
    ORDER BY x.store, x.lane
"""
# What each lane said it holds of the catalog (hello/status), from its current epoch's row.
_LANE_CATALOG = """
    SELECT l.store, l.lane, l.catalog_version, {rank} FROM lanes l {join} GROUP BY l.store, l.lane
"""
_LANE_CATALOG_PG = """
    SELECT DISTINCT ON (l.store, l.lane) l.store, l.lane, l.catalog_version FROM lanes l {join}
    ORDER BY l.store, l.lane, {first}l.last_seen DESC, l.epoch DESC
"""
_RETIRED_PIECES = {
    "join": "LEFT JOIN retired_epochs r "
    "ON r.store = l.store AND r.lane = l.lane AND r.epoch = l.epoch",
    "retired": "r.epoch IS NOT NULL",
    "first": "r.epoch IS NOT NULL, ",
    "count": "count(r.epoch) OVER (PARTITION BY l.store, l.lane)",
    "rank": "max(l.last_seen + CASE WHEN r.epoch IS NULL THEN 4611686018427387904 ELSE 0 END)",
}
_NONE_RETIRED = {"join": "", "retired": "0", "first": "", "count": "0", "rank": "max(l.last_seen)"}


def lane_queries(db: Sql) -> tuple[str, str]:
    """The lanes query and the lanes' catalog query for this database's dialect and schema,
    joining `retired_epochs` only while it holds a row."""
    retiring = has_table(db, "retired_epochs") and db.fetchone(
        "SELECT 1 FROM retired_epochs LIMIT 1"
    )
    pieces = dict(_RETIRED_PIECES if retiring else _NONE_RETIRED)
    if db.dialect == "postgres":
        pieces["retired"] = pieces["retired"].replace("0", "false")
        return _LANES_PG.format(**pieces), _LANE_CATALOG_PG.format(**pieces)
    pieces["count"] = "count(r.epoch)" if retiring else "0"
    return _LANES_SQLITE.format(**pieces), _LANE_CATALOG.format(**pieces)


_TOO_OLD = re.compile(r"unsupported protocol version (-?\d+)")


def lanes_too_old(db: Sql) -> dict[tuple[str, str], int]:
    """Lanes whose messages were refused for a protocol version older than head office serves
    (from the quarantine, capped and indexed by lane): the lane's box must be upgraded. A lane
    newer than head office is refused the same way but is not "too old"; upgrade order is head
    office first (README, "Protocol versions")."""
    out: dict[tuple[str, str], int] = {}
    for store, lane, reason in db.fetchall(
        "SELECT store, lane, reason FROM quarantine WHERE store IS NOT NULL AND lane IS NOT NULL "
        "AND reason LIKE '%unsupported protocol version%' ORDER BY last_at"
    ):
        m = _TOO_OLD.search(str(reason))
        if m and int(m.group(1)) < min(SUPPORTED_VERSIONS):
            out[(str(store), str(lane))] = int(m.group(1))
    return out


def has_table(db: Sql, name: str) -> bool:
    """Whether the database has `name` yet (a database older than its schema version)."""
    if db.dialect == "postgres":
        row = db.fetchone("SELECT to_regclass(?) IS NOT NULL", (name,))
    else:
        row = db.fetchone(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        )
    return bool(row and row[0])


def catalog_figures(db: Sql) -> dict[str, Any]:
    """The catalog's latest version, whether the store registry is enforced yet, and each
    registered store's head version (the last version that touched its view), from two
    queries whatever the number of stores: the latest version of every scope, and the
    registry's rows (for each store's price zone)."""
    if not has_table(db, "catalog_versions"):
        return {"latest": 0, "registry": False, "heads": {}}
    latest = versions.latest_version(db)
    touched = {
        str(scope): int(v)
        for scope, v in db.fetchall(
            "SELECT scope, max(version) FROM catalog_scope_hashes GROUP BY scope"
        )
    }
    registry = versions.stores(db)
    heads = {
        store: max(touched.get(s, 0) for s in cat.store_scopes(store, row.get("price_zone")))
        for store, row in registry.items()
    }
    return {"latest": latest, "registry": bool(registry), "heads": heads}


def publisher_figures(stats: PublisherStats) -> dict[str, Any]:
    """This process's head publisher: whether it is connected and what it published."""
    return {
        "connected": stats.connected,
        "standby": stats.standby,
        "connects": stats.connects,
        "heads_published": stats.heads_published,
        "heads_cleared": stats.heads_cleared,
        "version_seen": stats.version_seen,
        "last_publish_ms": stats.last_publish_ms,
    }


def ingest_figures(stats: IngestStats) -> dict[str, Any]:
    """What this process's ingest refused, shed and holds in memory (since it started)."""
    inbox = stats.inbox
    top = sorted(inbox.shed_by_store.items(), key=lambda kv: -kv[1])[:10]
    return {
        "connected": stats.connected,
        "messages": stats.messages,
        "entries_applied": stats.entries_applied,
        "entries_held": stats.entries_held,
        "quarantined": stats.quarantined,
        "epochs_refused": stats.epochs_refused,
        "groups_split": stats.groups_split,
        "inbox_queued": inbox.queued,
        "inbox_peak": inbox.peak_queued,
        "messages_shed": inbox.shed,
        "shed_by_store": [{"store": k, "shed": v} for k, v in top],
        "lane_epochs_tracked": len(stats.lane_hwm),
        "lane_epochs_forgotten": stats.lane_hwm.dropped,
        "broker_lost_at": stats.broker_lost_at,
        "incarnation": stats.incarnation,
        "restores_detected": stats.restores_detected,
        "lanes_refused": stats.lanes_refused,
    }


def live_view(data: dict[str, Any], stats: IngestStats) -> dict[str, Any]:
    """What the running ingest knows on top of the database: its broker link (a banner, and
    lanes "unknown" instead of "online" while it is down) and each lane's proof."""
    if not stats.connected:
        lost = stats.broker_lost_at
        data["broker_link"] = {
            "connected": False,
            "lost_at": lost,
            "text": (
                "Head office is not connected to the broker"
                + (f" since {time.strftime('%H:%M:%S', time.localtime(lost))}" if lost else "")
                + ": nothing arrives from the lanes, so their state is unknown (the last "
                "state head office recorded is kept as last_reported)."
            ),
        }
        for ln in data["lanes"]:
            ln["last_reported"] = ln["online"]
            if ln["online"] in ("online", "stale"):
                ln["online"] = "unknown"
        for st in data["stores"]:
            st["online"] = 0
    else:
        data["broker_link"] = {"connected": True, "lost_at": stats.broker_lost_at, "text": ""}
    for ln in data["lanes"]:
        proof = stats.proofs.get((ln["store"], ln["lane"]))
        ln["sync"] = proof if proof is not None and proof["epoch"] == ln["epoch"] else None
    return data


def open_transits(db: Sql) -> list[dict[str, Any]]:
    """Open transits for the page (headoffice.transit.report); empty before schema 3."""
    return transit_report.open_transits(db, limit=200)


def collect(
    database: Target,
    *,
    offline_after_s: float = 60.0,
    now: float | None = None,
    transits: TransitSource = open_transits,
) -> dict[str, Any]:
    """Everything the page shows from the database (`status_app` adds the live ingest's
    figures when it runs in the head-office process)."""
    now = time.time() if now is None else now
    now_ms = now * 1000
    try:
        db = open_readonly(database)
    except DatabaseError as exc:
        return {"at": now, "error": str(exc), "lanes": [], "stores": []}
    if db is None:
        error = f"{describe(database)}: no head-office database yet"
        return {"at": now, "error": error, "lanes": [], "stores": []}
    try:
        lanes_query, lane_catalog_query = lane_queries(db)
        lanes = db.fetchall(lanes_query)
        quarantine = {
            (r[0], r[1]): int(r[2])
            for r in db.fetchall(  # sum() is numeric (Decimal) on PostgreSQL: int() it
                "SELECT coalesce(store, ''), coalesce(lane, ''), sum(times) FROM quarantine "
                "GROUP BY 1, 2"
            )
        }
        recent = [
            {"store": r[0], "lane": r[1], "reason": r[2], "times": r[3], "last_at": r[4]}
            for r in db.fetchall(
                "SELECT store, lane, reason, times, last_at FROM quarantine "
                "ORDER BY last_at DESC LIMIT ?",
                (RECENT,),
            )
        ]
        held: dict[tuple[str, str], int] = {}
        held_recent: list[dict[str, Any]] = []
        if has_table(db, "held"):
            held = {
                (r[0], r[1]): int(r[2])
                for r in db.fetchall(
                    "SELECT store, lane, count(*) FROM held WHERE state = 'held' GROUP BY 1, 2"
                )
            }
            held_recent = db.fetchdicts(
                "SELECT id, store, lane, epoch, seq, kind, txn_id, code, reason, held_at "
                "FROM held WHERE state = 'held' ORDER BY id DESC LIMIT ?",
                (RECENT,),
            )
        counters = {str(k): int(v) for k, v in db.fetchall("SELECT name, value FROM counters")}
        too_old = lanes_too_old(db)
        open_tr = transits(db)
        catalog = catalog_figures(db)
        lane_catalog: dict[tuple[str, str], int | None] = {}
        if catalog["latest"] or catalog["registry"]:
            lane_catalog = {(r[0], r[1]): r[2] for r in db.fetchall(lane_catalog_query)}
    finally:
        db.close()
    out_lanes: list[dict[str, Any]] = []
    for row in lanes:
        store, lane, epoch, hwm, lane_last, gaps, last_seen, state, backlog, at, version = row[:11]
        if row[12]:  # every epoch of the lane retired: the new box has not spoken yet
            epoch, hwm, lane_last, gaps = None, 0, 0, 0
        seen_ms = max(last_seen or 0, at or 0)
        age = max(0.0, (now_ms - seen_ms) / 1000)
        if state == "online" and age <= offline_after_s:
            online = "online"
        elif state == "online":
            online = "stale"
        else:
            online = "offline" if state else "unknown"
        out_lanes.append(
            {
                "store": store,
                "lane": lane,
                "epoch": epoch,
                "epochs": int(row[11]),
                "retired_epochs": int(row[13]),
                "online": online,
                "hwm": hwm,
                "lane_last_seq": lane_last,
                "lag_entries": max(0, (lane_last or 0) - hwm),
                "backlog": backlog,
                "last_seen_age_s": round(age, 1),
                "gaps": gaps,
                "quarantined": quarantine.get((store, lane), 0),
                "held": held.get((store, lane), 0),
                "version": version,
                "protocol_too_old": too_old.get((store, lane)),
                **_lane_catalog(lane_catalog.get((store, lane)), catalog["heads"].get(store)),
            }
        )
    stores: dict[str, dict[str, Any]] = {}
    for ln in out_lanes:
        s = stores.setdefault(
            ln["store"],
            {
                "store": ln["store"],
                "lanes": 0,
                "online": 0,
                "backlog": 0,
                "lag": 0,
                "held": 0,
                "catalog_head": catalog["heads"].get(ln["store"]),
                "registered": ln["store"] in catalog["heads"],
                "catalog_lagging": 0,
            },
        )
        s["lanes"] += 1
        s["online"] += ln["online"] == "online"
        s["backlog"] += ln["backlog"] or 0
        s["lag"] += ln["lag_entries"]
        s["held"] += ln["held"]
        s["catalog_lagging"] += ln["catalog_lag"]
    lagging = [f"{ln['store']}/{ln['lane']}" for ln in out_lanes if ln["catalog_lag"]]
    serves = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
    return {
        "at": now,
        "stores": list(stores.values()),
        "lanes": out_lanes,
        "quarantine_total": sum(quarantine.values()),
        "quarantine_unattributed": quarantine.get(("", ""), 0),
        "quarantine_recent": recent,
        "held_total": sum(held.values()),
        "held_recent": held_recent,
        "epochs_refused": counters.get("epochs_refused", 0),
        "protocols": {
            "version": VERSION,
            "serves": list(SUPPORTED_VERSIONS),
            "lanes_too_old": [
                {"store": k[0], "lane": k[1], "protocol": v} for k, v in sorted(too_old.items())
            ][: RECENT * 5],
            "text": f"head office runs lanesync {VERSION} and serves protocol {serves}",
        },
        "open_transits": open_tr,
        "catalog": {
            "latest": catalog["latest"],
            "registry_enforced": catalog["registry"],
            "stores_registered": len(catalog["heads"]),
            "heads": catalog["heads"],
            "lanes_lagging": len(lagging),
            "lagging": lagging[: RECENT * 5],
        },
    }


def _version_cell(ln: dict[str, Any]) -> Any:
    """The lane's lanesync release, flagged when it speaks a protocol older than head office
    serves (it cannot sync until its box is upgraded)."""
    version = str(ln.get("version") or "-")
    old = ln.get("protocol_too_old")
    if old is None:
        return version
    flag = f'<span class="state offline">TOO OLD: protocol {int(old)}</span>'
    return _Raw(f"{html.escape(version)} {flag}")


def _epochs_cell(ln: dict[str, Any]) -> str:
    """How many epochs the lane has on record, and how many of them were retired."""
    retired = ln.get("retired_epochs", 0)
    epochs = ln.get("epochs", 1)
    return f"{epochs} ({retired} retired)" if retired else str(epochs)


def _lane_catalog(held: int | None, head: int | None) -> dict[str, Any]:
    """A lane's catalog version against its store's head: it lags while it holds less (or
    has not said: an older lane, or one that never connected since head office learnt it)."""
    return {
        "catalog": held,
        "catalog_head": head,
        "catalog_lag": head is not None and head > 0 and (held or 0) < head,
    }


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    if s < 172_800:
        return f"{s / 3600:.0f}h ago"
    return f"{s / 86400:.0f}d ago"


def _table(cls: str, head: list[str], rows: list[list[Any]], empty: str) -> str:
    e = html.escape
    if not rows:
        return f'<p class="empty {cls}">{e(empty)}</p>'
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else e(str(c))}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """Already-escaped HTML."""


def render_fragment(data: dict[str, Any]) -> str:
    """The page's content; every value from the database is escaped."""
    e = html.escape
    parts = [f'<p id="updated">Updated {time.strftime("%H:%M:%S", time.localtime(data["at"]))}</p>']
    link = data.get("broker_link")
    if link and not link["connected"]:
        parts.append(f'<p id="broker-link" class="error banner">{e(link["text"])}</p>')
    if data.get("error"):
        parts.append(f'<p class="error">{e(data["error"])}</p>')
    lanes = data["lanes"]
    online = sum(1 for ln in lanes if ln["online"] == "online")
    parts.append(
        f'<p id="summary">{len(data["stores"])} stores, {len(lanes)} lanes, {online} online, '
        f"{data.get('quarantine_total', 0)} quarantined messages, "
        f"{data.get('held_total', 0)} held entries, "
        f"{data.get('epochs_refused', 0)} new epochs refused</p>"
    )
    protocols = data.get("protocols")
    if protocols:
        old = protocols["lanes_too_old"]
        listed = ", ".join(f"{o['store']}/{o['lane']} (protocol {o['protocol']})" for o in old)
        parts.append(
            f'<p id="protocols">{e(protocols["text"])}'
            + (
                f'; <span class="state offline">lanes older than that, refused until their '
                f"box is upgraded: {e(listed)}</span>"
                if old
                else ""
            )
            + "</p>"
        )
    catalog = data.get("catalog")
    if catalog:
        if not catalog["registry_enforced"]:
            parts.append(
                '<p id="catalog" class="warn">No store registry yet: every store is accepted. '
                "Load the stores dataset (lanesync catalog load stores FILE) to enforce it.</p>"
            )
        else:
            behind = ", ".join(e(x) for x in catalog["lagging"][:20])
            more = catalog["lanes_lagging"] - min(20, len(catalog["lagging"]))
            parts.append(
                f'<p id="catalog">Catalog version {catalog["latest"]}, '
                f"{catalog['stores_registered']} stores registered, "
                f"{catalog['lanes_lagging']} lanes behind their store's head"
                + (f": {behind}" if behind else "")
                + (f" and {more} more" if more > 0 else "")
                + "</p>"
            )
    pub = (catalog or {}).get("publisher")
    if pub:
        link = "connected" if pub["connected"] else "DISCONNECTED from the broker"
        if pub.get("standby"):
            link += ", standing by (another worker publishes)"
        parts.append(
            f'<p id="heads">Catalog heads: publisher {link}, {pub["heads_published"]} heads '
            f"published, up to version {pub['version_seen']}</p>"
        )
    live = data.get("ingest")
    if live:
        shed = ", ".join(f"{e(x['store'] or '-')}: {x['shed']}" for x in live["shed_by_store"])
        parts.append(
            f'<p id="ingest">This process: {live["messages"]} messages, '
            f"{live['inbox_queued']} waiting (peak {live['inbox_peak']}), "
            f"{live['messages_shed']} shed{' (' + shed + ')' if shed else ''}, "
            f"{live['epochs_refused']} epochs refused, {live['groups_split']} groups split</p>"
        )
    parts.append("<h2>Stores</h2>")
    parts.append(
        _table(
            "stores",
            ["Store", "Lanes", "Online", "Backlog", "Lag (entries)", "Held", "Catalog head"],
            [
                [
                    s["store"],
                    s["lanes"],
                    f"{s['online']} of {s['lanes']}",
                    s["backlog"],
                    s["lag"],
                    s.get("held", 0),
                    _store_catalog(s, bool(catalog and catalog["registry_enforced"])),
                ]
                for s in data["stores"]
            ],
            "No store has connected yet.",
        )
    )
    parts.append("<h2>Lanes</h2>")
    parts.append(
        _table(
            "lanes",
            [
                "Store",
                "Lane",
                "State",
                "Backlog",
                "Lag (entries)",
                "Applied to seq",
                "Last seen",
                "Gaps",
                "Quarantine",
                "Held",
                "Epoch",
                "Epochs",
                "Catalog",
                "Version",
                "Sync",
            ],
            [
                [
                    ln["store"],
                    ln["lane"],
                    _Raw(f'<span class="state {e(ln["online"])}">{e(ln["online"])}</span>'),
                    "-" if ln["backlog"] is None else ln["backlog"],
                    ln["lag_entries"],
                    ln["hwm"],
                    _age(ln["last_seen_age_s"]),
                    ln["gaps"],
                    ln["quarantined"],
                    ln.get("held", 0),
                    "none yet (retired)" if ln.get("epoch") is None else ln["epoch"],
                    _epochs_cell(ln),
                    _lane_catalog_cell(ln),
                    _version_cell(ln),
                    _sync_cell(ln.get("sync")),
                ]
                for ln in lanes
            ],
            "No lane has connected yet.",
        )
    )
    parts.append("<h2>Quarantine</h2>")
    parts.append(
        _table(
            "quarantine",
            ["Store", "Lane", "Times", "Reason"],
            [
                [q["store"] or "-", q["lane"] or "-", q["times"], q["reason"]]
                for q in data.get("quarantine_recent", [])
            ],
            "Nothing quarantined.",
        )
    )
    parts.append("<h2>Held entries</h2>")
    parts.append(
        _table(
            "held",
            ["Store", "Lane", "Epoch", "Seq", "Kind", "Why", "Reason"],
            [
                [h["store"], h["lane"], h["epoch"], h["seq"], h["kind"], h["code"], h["reason"]]
                for h in data.get("held_recent", [])
            ],
            "No entry is held.",
        )
    )
    parts.append("<h2>Open transits</h2>")
    transits = data.get("open_transits", [])
    now_s = time.time()
    parts.append(
        _table(
            "transits",
            ["Transit no", "SSCC", "From", "To", "Travels by", "Lines", "Created on lane", "Age"],
            [
                [
                    t.get("transit_no") or "-",
                    t.get("sscc") or "-",
                    t.get("source_store", ""),
                    t.get("dest_store", ""),
                    t.get("travels_by") or "-",
                    t.get("lines", ""),
                    t.get("created_where", ""),
                    _age(now_s - t["created_at"] / 1000) if t.get("created_at") else "-",
                ]
                for t in transits
            ],
            "No open transits.",
        )
    )
    return "\n".join(parts)


def _store_catalog(s: dict[str, Any], enforced: bool) -> Any:
    if s.get("catalog_head") is None:
        if enforced:
            return _Raw('<span class="state offline">unregistered</span>')
        return "-"
    lagging = s.get("catalog_lagging", 0)
    return f"v{s['catalog_head']}" + (f" ({lagging} lanes behind)" if lagging else "")


def _lane_catalog_cell(ln: dict[str, Any]) -> Any:
    held, head = ln.get("catalog"), ln.get("catalog_head")
    shown = "-" if held is None else f"v{held}"
    if ln.get("catalog_lag"):
        return _Raw(f'<span class="state stale">{html.escape(shown)} behind v{head}</span>')
    return shown


def _sync_cell(sync: dict[str, Any] | None) -> Any:
    if sync is None:
        return "-"
    cls = {"identical": "online", "unknown": "unknown"}.get(sync["state"], "offline")
    return _Raw(f'<span class="state {cls}">{html.escape(sync["text"])}</span>')


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lanesync head office</title>
<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; margin: 0 0 .3em; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 .4em; }}
table {{ border-collapse: collapse; }} th, td {{ padding: .25em .7em; border-bottom: 1px solid #ddd;
text-align: left; }} th {{ background: #f3f3f3; }}
.state {{ padding: .1em .5em; border-radius: .8em; font-weight: 600; }}
.online {{ background: #d9f2d9; color: #185c18; }}
.offline {{ background: #f8d7d7; color: #8a1414; }}
.stale, .unknown {{ background: #fbefc9; color: #6b5200; }}
.error {{ color: #8a1414; font-weight: 600; }} .empty {{ color: #666; }}
.warn {{ color: #6b5200; }}
.banner {{ background: #f8d7d7; padding: .5em .8em; border-radius: .3em; }}
#updated {{ color: #666; font-size: .9em; }}
</style></head>
<body><h1>lanesync head office</h1>
<div id="content">{content}</div>
<script>
async function refresh() {{
  try {{
    const r = await fetch("fragment", {{cache: "no-store"}});
    if (r.ok) document.getElementById("content").innerHTML = await r.text();
  }} catch (e) {{ /* head office restarting: keep the last view and try again */ }}
}}
setInterval(refresh, {refresh_ms});
</script></body></html>
"""


def status_app(
    database: Target,
    *,
    refresh_s: float = 5.0,
    offline_after_s: float = 60.0,
    metrics: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    stats: IngestStats | None = None,
    catalog: CatalogConfig | None = None,
    publisher: PublisherStats | None = None,
) -> web.Application:
    """The page, `/fragment`, `/api/status` and (when given) `/metrics`; with `stats`, the
    running ingest's own figures too; with `catalog`, the ERP's `POST /api/catalog/...`."""

    async def data() -> dict[str, Any]:
        out = await asyncio.to_thread(collect, database, offline_after_s=offline_after_s)
        if stats is not None:
            out["ingest"] = ingest_figures(stats)
            live_view(out, stats)
        if publisher is not None and "catalog" in out:
            out["catalog"]["publisher"] = publisher_figures(publisher)
        return out

    async def page(_: web.Request) -> web.Response:
        body = _PAGE.format(
            content=render_fragment(await data()),
            refresh=max(1, round(refresh_s)),
            refresh_ms=int(refresh_s * 1000),
        )
        return web.Response(text=body, content_type="text/html")

    async def fragment(_: web.Request) -> web.Response:
        return web.Response(text=render_fragment(await data()), content_type="text/html")

    async def api(_: web.Request) -> web.Response:
        return web.json_response(await data())

    app = web.Application(client_max_size=catalog.max_upload_bytes if catalog else 1024**2)
    if catalog is not None:
        catalog_http.add_routes(app, database, catalog)
    app.router.add_get("/", page)
    app.router.add_get("/fragment", fragment)
    app.router.add_get("/api/status", api)
    if metrics is not None:
        app.router.add_get("/metrics", metrics)
    return app
