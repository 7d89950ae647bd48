"""`lanesync headoffice`: run head office."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

from headoffice import acl, enrol, health, importcli, retire
from headoffice import config as ho_config
from headoffice.transit import cli as transit_cli
from protocol.errors import ConfigError, LanesyncError

DEFAULT_CONFIG = ho_config.DEFAULT_CONFIG  # LANESYNC_CONFIG, when set, replaces it


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("headoffice", help="run head office (ingest)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML (default {DEFAULT_CONFIG})")
    importcli.add_daemon_options(p)  # --status-page HOST:PORT
    p.add_argument(
        "--worker",
        type=int,
        metavar="N",
        help="run as ingest worker N (1..64) of broker.share_group or ingest.leases: the MQTT "
        "client id gets "
        "'-wN' so the workers' sessions stay apart",
    )
    p.set_defaults(handler=cmd_headoffice)
    sub_of_ho = acl.register(p)  # lanesync headoffice acl --stores ... (none: run head office)
    enrol.register(sub_of_ho)  # lanesync headoffice store add|remove, pki init|crl
    retire.register(sub_of_ho, DEFAULT_CONFIG)  # lanesync headoffice lane retire S001/L1 --epoch E
    health.register(sub_of_ho, DEFAULT_CONFIG)  # lanesync headoffice status [--json]
    sub_of_ho.metavar = "{acl,store,pki,lane,status}"
    importcli.register(sub, DEFAULT_CONFIG)  # lanesync import FILE
    transit_cli.register(sub, DEFAULT_CONFIG)  # lanesync transits [--json] [--cancel ...]


def cmd_headoffice(args: argparse.Namespace) -> int:
    from headoffice import daemon  # noqa: PLC0415 - ingest's stack only for this command

    try:

        def load() -> ho_config.HeadOfficeConfig:  # at start and again on SIGHUP (reload)
            return as_worker(
                importcli.apply_daemon_options(ho_config.load(args.config), args), args
            )

        asyncio.run(daemon.run(load(), reload=load))
    except LanesyncError as exc:
        print(f"lanesync headoffice: {exc}", file=sys.stderr)
        return 2
    return 0


def as_worker(
    cfg: ho_config.HeadOfficeConfig, args: argparse.Namespace
) -> ho_config.HeadOfficeConfig:
    """Give worker N its own client id: two clients with one id make the broker drop the
    older connection, so same-id workers would take turns kicking each other off."""
    n = getattr(args, "worker", None)
    if n is None:
        return cfg
    if not 1 <= n <= 64:
        raise ConfigError(f"--worker: must be 1..64, got {n}")
    if not cfg.broker.share_group and not cfg.ingest.leases:
        raise ConfigError(
            "--worker: needs broker.share_group or ingest.leases in the config; without either "
            "every worker would receive and apply every batch"
        )
    broker = dataclasses.replace(cfg.broker, client_id=f"{cfg.broker.client_id}-w{n}")
    # Workers share one config file: worker N listens N - 1 ports up, so they do not fight for
    # the status page's and metrics' ports (and Prometheus scrapes each worker's own counters).
    ops = cfg.ops
    page = dataclasses.replace(ops.status_page, listen=_shift(ops.status_page.listen, n - 1))
    metrics = dataclasses.replace(ops.metrics, listen=_shift(ops.metrics.listen, n - 1))
    ops = dataclasses.replace(ops, status_page=page, metrics=metrics)
    return dataclasses.replace(cfg, broker=broker, ops=ops)


_shift = health.shift_listen
