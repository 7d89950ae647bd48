"""HTTP delivery against a local aiohttp server that fails first; CLI and config errors."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from headoffice import config as ho_config
from headoffice.extract import config as x_config
from headoffice.extract import job
from headoffice.extract.config import DeliveryConfig
from lanesync.cli import main
from protocol.errors import ConfigError
from tests.extract.extract_helpers import LATER, HeadOffice, config, line, sale


async def test_delivery_retries_with_the_same_idempotency_key(
    ho: HeadOffice, tmp_path: Path
) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers["Idempotency-Key"]
        seen.append((key, body["record_id"]))
        if sum(1 for k, _ in seen if k == key) < 3:
            return web.Response(status=503, text="busy")
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/purchases", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for i in range(3):
            ho.add(sale(f"T1000{i}", "C1", [line("P1", "1.000", 100)]))
        cfg = config(ho)
        cfg = replace(
            cfg,
            delivery=DeliveryConfig(
                url=f"http://127.0.0.1:{port}/purchases", retries=3, backoff_s=0.01
            ),
        )
        job.run(cfg, now_ms=LATER)
        assert await job.deliver_pending(cfg) == (3, 0)
        assert len(seen) == 9
        assert all(k == rid for k, rid in seen)
        assert await job.deliver_pending(cfg) == (0, 0)  # delivered records are not sent again
    finally:
        await runner.cleanup()


async def test_delivery_gives_up_and_keeps_the_record_for_next_run(
    ho: HeadOffice, tmp_path: Path
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)]))
        cfg = replace(
            config(ho),
            delivery=DeliveryConfig(url=f"http://127.0.0.1:{port}/", retries=1, backoff_s=0.01),
        )
        job.run(cfg, now_ms=LATER)
        assert await job.deliver_pending(cfg) == (0, 1)
        assert await job.deliver_pending(cfg) == (0, 1)  # still pending, tried again
    finally:
        await runner.cleanup()


def test_cli_run_json_reports_counts(
    ho: HeadOffice, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ho.add(sale("T10001", "C1", [line("P1", "1.000", 100)], day="2026-01-01"))
    toml = tmp_path / "ho.toml"
    database = f'url = "{ho.target}"' if ho.is_pg else f'path = "{ho.target}"'
    toml.write_text(
        f'[database]\n{database}\n[broker]\nhost = "127.0.0.1"\n'
        f'[extract]\noutput_dir = "{tmp_path / "out"}"\nschedule = "each_run"\n'
        '[extract.return_types]\nRETURN = "increase"\nDAMAGED = "none"\n'
    )
    assert main(["extract", "run", "--config", str(toml), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["purchases"], out["rollups"], out["postings"], out["run"]) == (1, 1, 3, 1)
    txn = str(
        json.loads((tmp_path / "out" / "run-000001" / "purchases.jsonl").read_text())["txn_id"]
    )
    assert (
        main(
            ["extract", "record-posting", "--config", str(toml), "--txn-id", txn, "--erp-ref", "X"]
        )
        == 0
    )
    assert "already emitted" in capsys.readouterr().err
    loaded = ho_config.load(toml)  # [extract] does not upset head office
    assert (loaded.database_url if ho.is_pg else loaded.database) == ho.target


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('schedule = "hourly"', "extract.schedule"),
        ("delay_period_hours = -1", "extract.delay_period_hours"),
        ('[extract.delivery]\nurl = "ftp://x"', "extract.delivery.url"),
        ('[extract.return_types]\nRETURN = "sideways"', "extract.return_types.RETURN"),
        ('[[extract.tax]]\ncountry = "US"\nstate = "CA"\nrate = "abc"', "extract.tax[0].rate"),
        (
            '[[extract.pos_batches]]\nid = "B"\nstore = "S1"\ncountry = "US"\nstate = "NY"\n'
            'warehouse = "W"',
            "extract.pos_batches[0]",
        ),
        ("rollup_enabeld = true", "extract.rollup_enabeld"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        x_config.parse(tomllib.loads("[extract]\n" + text))


def test_config_reads_batches_and_tax() -> None:
    cfg = x_config.parse(
        tomllib.loads(
            "[extract]\ndelay_period_days = 1\ndelay_period_hours = 2\n"
            '[[extract.tax]]\ncountry = "US"\nstate = "CA"\nrate = "7.25"\n'
            'exempt_tax_codes = ["EXEMPT"]\n'
            '[[extract.pos_batches]]\nid = "B"\nstore = "S1"\ncountry = "US"\nstate = "CA"\n'
            'warehouse = "W"\n'
        )
    )
    assert cfg.delay_period_s == 26 * 3600
    b = cfg.batch_for("S1")
    assert b is not None
    assert cfg.tax_for(b) == cfg.tax[0]
