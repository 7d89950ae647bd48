"""`lanesync demo`: a chain in miniature, with a WAN outage, reconciled at the end.

Starts a real Mosquitto (or, with `--broker nats|rabbitmq`, NATS's MQTT listener or a RabbitMQ
node of its own with the MQTT plugin) on a free loopback port, head office, and two stores with
two lanes each, all as separate processes. Each store reaches the broker through its own TCP
proxy (its WAN link). Tills sell throughout; store S1's link is cut (connections reset) and
store S2's is blackholed (packets vanish, no FIN, no RST) for a while, then both come back. At
the end every txn_id the lanes confirmed is compared with what head office holds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uuid6
from rich.console import Console
from rich.table import Table

from lanesync import samples, stack
from lanesync.broker import Broker, MosquittoBroker
from lanesync.democatalog import DemoCatalog
from lanesync.nats import NatsBroker
from lanesync.posclient import PosClient
from lanesync.proxy import ProxyThread
from lanesync.rabbitmq import RabbitMQBroker
from lanesync.reconcile import LaneReport, reconcile
from protocol.identity import LaneId
from protocol.money import fmt_money

LANES = [LaneId("S1", "L1"), LaneId("S1", "L2"), LaneId("S2", "L1"), LaneId("S2", "L2")]


DEMO_CURRENCY = "EUR"  # the demo stores' (lanesync.democatalog)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="2 stores x 2 lanes, a WAN outage, and a reconciliation")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.add_argument("--outage", type=float, default=8.0, help="seconds the links are down (8)")
    p.add_argument("--rate", type=float, default=20.0, help="sales per second per lane (20)")
    p.add_argument("--workdir", help="keep logs and databases here instead of a temp dir")
    p.add_argument(
        "--broker",
        choices=("mosquitto", "nats", "rabbitmq"),
        default="mosquitto",
        help="MQTT server to run: mosquitto (default), nats (NATS's MQTT listener) or rabbitmq "
        "(RabbitMQ's MQTT plugin)",
    )
    p.set_defaults(handler=cmd_demo)


@dataclass
class Till:
    """A POS selling on one lane from its own thread, recording every confirmation."""

    lane: LaneId
    socket_path: Path
    rate: float
    confirmed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"till-{self.lane}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        rng = random.Random(str(self.lane))
        client = PosClient(str(self.socket_path))
        n = 0
        try:
            while not self._stop.wait(1 / self.rate):
                n += 1
                # Priced as the lane's catalog says today (GET /v1/items/CODE), as a till does.
                doc = samples.sale(
                    rng, self.lane.store, self.lane.lane, n, lambda code: _price(client, code)
                )
                # The till names the txn_id, so a retry after a lost answer is not a new sale.
                doc["txn_id"] = str(uuid6.uuid7())
                try:
                    self.confirmed.append(client.submit(doc)["txn_id"])
                except (OSError, RuntimeError) as exc:
                    self.refused.append(str(exc))
        finally:
            client.close()


def _price(client: PosClient, code: str) -> int | None:
    """The lane's price of `code` now, or None (no catalog yet: the list price is sent)."""
    try:
        status, item = client.request("GET", f"/v1/items/{code}")
    except OSError:
        return None
    if status != 200 or not isinstance(item, dict) or not isinstance(item.get("price"), dict):
        return None
    amount = item["price"].get("amount")
    return amount if type(amount) is int else None


class Narrator:
    def __init__(self, quiet: bool) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim] {text}")


def backlog(workdir: Path, lane: LaneId) -> int:
    """Entries the lane journaled that head office has not acknowledged (read-only)."""
    from agent.journal.file import JournalFile  # noqa: PLC0415 - only the progress lines need it

    with JournalFile(stack.journal_path(workdir, lane)) as j:
        last = j.seq_range()[1] or 0
        acked, _ = j.acked()
    return last - acked


def run(
    workdir: Path, outage: float, rate: float, quiet: bool, broker_kind: str = "mosquitto"
) -> dict[str, Any]:
    say = Narrator(quiet).say
    servers: dict[str, type[MosquittoBroker] | type[NatsBroker] | type[RabbitMQBroker]] = {
        "mosquitto": MosquittoBroker,
        "nats": NatsBroker,
        "rabbitmq": RabbitMQBroker,
    }
    server: Broker = servers[broker_kind](workdir / "broker")
    with server as broker:
        say(f"broker: {broker.kind} on 127.0.0.1:{broker.port}")
        ho = stack.headoffice(workdir, broker.port)
        catalog = DemoCatalog(workdir, workdir / "headoffice.toml", LANES)
        version = catalog.load_initial()
        say(
            f"head office: catalog version {version} loaded (2 stores, 4 lanes, "
            f"{len(samples.ITEMS)} items, prices, tax rates) with lanesync catalog load"
        )
        links = {
            store: ProxyThread("127.0.0.1", broker.port, name=f"wan-{store}").start()
            for store in ("S1", "S2")
        }
        agents = [
            stack.agent(
                workdir,
                lane,
                links[lane.store].port,
                keepalive=2,
                replication={
                    "ack_timeout_s": 3.0,
                    "publish_timeout_s": 3.0,
                    "backoff_max_s": 2.0,
                    "linger_ms": 10,
                },
            )
            for lane in LANES
        ]
        tills = [Till(lane, stack.api_socket_path(workdir, lane), rate) for lane in LANES]
        started = [ho, *agents]
        try:
            ho.start().wait_notify("STATUS=subscribed")
            say("head office: subscribed")
            for a in agents:
                a.start()
            for a in agents:
                a.wait_notify("READY=1")
            say("lanes: S1/L1 S1/L2 S2/L1 S2/L2 ready")
            loaded = catalog.wait_all(version, 30)
            say(f"catalog version {version} on {len(loaded)} of 4 lanes; tills start selling")
            for t in tills:
                t.start()
            time.sleep(2)
            changes = [price_change(catalog, "P1000", 1949, say, online=True)]
            time.sleep(2)
            links["S1"].cut()
            links["S2"].blackhole()
            say(f"WAN down: S1 link cut (reset), S2 link blackholed (silent) for {outage:g}s")
            time.sleep(outage / 2)
            offline_change = catalog.change_price("P2000", 259)
            say(
                f"head office: P2000 2.49 -> 2.59 EUR (version {offline_change}) while both "
                "stores are offline; their lanes keep trading on the version they hold"
            )
            time.sleep(outage / 2)
            peak = {str(lane): backlog(workdir, lane) for lane in LANES}
            say("backlog while offline: " + ", ".join(f"{k} {v}" for k, v in peak.items()))
            behind = {str(x): catalog.held(x) for x in LANES}
            restored = time.monotonic()
            links["S1"].resume()
            links["S2"].resume()
            say("WAN restored; lanes reconnect and drain")
            caught_up = catalog.wait_all(offline_change, 30, restored)
            changes.append(
                {
                    "item": "P2000",
                    "price": 259,
                    "version": offline_change,
                    "while_offline": True,
                    "lanes_before_restore": behind,
                    "reached_s": caught_up,
                    "price_on_lanes": {str(x): catalog.price_on(x, "P2000") for x in LANES},
                }
            )
            say(
                f"price change of version {offline_change} reached {len(caught_up)} of 4 lanes "
                f"within {max(caught_up.values(), default=0):.2f}s of the link coming back"
            )
            time.sleep(3)
            for t in tills:
                t.stop()
            say("tills stopped; waiting for head office to acknowledge everything")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(backlog(workdir, x) for x in LANES):
                time.sleep(0.2)
            say("drained" if not any(backlog(workdir, x) for x in LANES) else "NOT drained")
        finally:
            for t in tills:
                t.stop()
            for c in started:
                c.stop()
            for link in links.values():
                link.close()
    reports = [
        reconcile(stack.journal_path(workdir, x), workdir / "headoffice.db", x) for x in LANES
    ]
    return summary(reports, tills, peak, changes)


def price_change(
    catalog: DemoCatalog, item: str, price: int, say: Any, *, online: bool
) -> dict[str, Any]:
    """Change one price at head office and time it to every lane (from the load's start)."""
    before = catalog.prices[item]
    started = time.monotonic()
    version = catalog.change_price(item, price)
    reached = catalog.wait_all(version, 15, started)
    slowest = max(reached.values(), default=0.0)
    say(
        f"head office: {item} {fmt_money(before, DEMO_CURRENCY)} -> "
        f"{fmt_money(price, DEMO_CURRENCY)} (version {version}): "
        f"on {len(reached)} of 4 lanes within {slowest * 1000:.0f} ms of the load"
    )
    return {
        "item": item,
        "price": price,
        "version": version,
        "while_offline": not online,
        "reached_s": reached,
        "price_on_lanes": {str(x): catalog.price_on(x, item) for x in LANES},
    }


def summary(
    reports: list[LaneReport],
    tills: list[Till],
    peak: dict[str, int],
    changes: list[dict[str, Any]],
) -> dict[str, Any]:
    lanes = []
    for r, t in zip(reports, tills, strict=True):
        d = r.as_dict()
        d["confirmed_to_pos"] = len(t.confirmed)
        d["refused_to_pos"] = len(t.refused)
        d["backlog_during_outage"] = peak.get(r.lane, 0)
        lanes.append(d)
    total = {
        k: sum(int(x[k]) for x in lanes)
        for k in ("confirmed", "confirmed_to_pos", "at_head_office", "lost", "duplicated")
    }
    prices_everywhere = all(
        len(c["reached_s"]) == len(LANES) and set(c["price_on_lanes"].values()) == {c["price"]}
        for c in changes
    )
    return {
        "lanes": lanes,
        "total": total,
        "order_kept": all(r.order_kept for r in reports),
        "price_changes": changes,
        "ok": total["lost"] == 0
        and total["duplicated"] == 0
        and all(r.order_kept for r in reports)
        and prices_everywhere,
    }


def print_table(result: dict[str, Any]) -> None:
    table = Table(title="lanesync demo: what the lanes confirmed vs what head office holds")
    for col in (
        "lane",
        "confirmed",
        "backlog in outage",
        "at head office",
        "lost",
        "duplicated",
        "order kept",
    ):
        table.add_column(col, justify="left" if col == "lane" else "right")
    for x in result["lanes"]:
        table.add_row(
            x["lane"],
            str(x["confirmed"]),
            str(x["backlog_during_outage"]),
            str(x["at_head_office"]),
            str(x["lost"]),
            str(x["duplicated"]),
            "yes" if x["order_kept"] else "NO",
        )
    t = result["total"]
    table.add_row(
        "total",
        str(t["confirmed"]),
        "",
        str(t["at_head_office"]),
        str(t["lost"]),
        str(t["duplicated"]),
        "yes" if result["order_kept"] else "NO",
        style="bold",
    )
    Console().print(table)
    prices = Table(title="price changes at head office, as each lane charges them")
    for col in ("item", "version", "when", *(str(x) for x in LANES)):
        prices.add_column(col, justify="left" if col in ("item", "when") else "right")
    for c in result["price_changes"]:
        prices.add_row(
            c["item"],
            str(c["version"]),
            "stores offline" if c["while_offline"] else "online",
            *(
                f"{fmt_money(c['price_on_lanes'][str(x)] or 0, DEMO_CURRENCY)} after "
                f"{c['reached_s'][str(x)]:.2f}s"
                if str(x) in c["reached_s"]
                else "NOT reached"
                for x in LANES
            ),
        )
    Console().print(prices)
    verdict = (
        "[green]OK: nothing lost, nothing duplicated, order kept, every price change on every "
        "lane[/green]"
    )
    Console().print(verdict if result["ok"] else "[red]FAILED[/red]")


def cmd_demo(args: argparse.Namespace) -> int:
    if args.workdir:
        result = run(Path(args.workdir), args.outage, args.rate, args.json, args.broker)
    else:
        with tempfile.TemporaryDirectory(prefix="lanesync-demo-") as d:
            result = run(Path(d), args.outage, args.rate, args.json, args.broker)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    if not result["ok"]:
        print("lanesync demo: reconciliation failed (see above)", file=sys.stderr)
    return 0 if result["ok"] else 1
