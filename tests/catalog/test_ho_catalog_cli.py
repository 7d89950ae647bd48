"""`lanesync catalog load|show|diff|history`, through its argument parser, on both backends."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from headoffice.catalog import cli
from tests import pgutil
from tests.pgutil import Backend

backend = pgutil.backend  # the fixture, parametrised over SQLite and PostgreSQL


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lanesync")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def config(backend: Backend, tmp_path: Path) -> str:
    table = backend.database_table()
    key, value = next(iter(table.items()))
    path = tmp_path / "headoffice.toml"
    path.write_text(f'[database]\n{key} = "{value}"\n', encoding="utf-8")
    return str(path)


def test_load_show_diff_history(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(backend, tmp_path)
    stores = tmp_path / "stores.csv"
    stores.write_text(
        "id,name,timezone,currency,price_zone,can_receive_stock,active\n"
        "S1,Main St,Europe/Dublin,EUR,Z1,1,1\nS2,Quay,Europe/Dublin,EUR,,0,1\n",
        encoding="utf-8",
    )
    assert run(["catalog", "--config", cfg, "load", "stores", str(stores)]) == 0
    assert "stores: version 1: 2 added, 0 changed, 0 removed; 2 rows" in capsys.readouterr().out
    prices = tmp_path / "prices.jsonl"
    prices.write_text(
        '{"item": "A1", "valid_from": "2026-01-01", "price": 100}\n'
        '{"item": "A1", "zone": "Z1", "valid_from": "2026-01-01", "price": 90}\n',
        encoding="utf-8",
    )
    assert run(["catalog", "--config", cfg, "load", "prices", str(prices), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["version"], out["added"]) == (True, 2, 2)
    # the same file again: no version
    assert run(["catalog", "--config", cfg, "load", "prices", str(prices)]) == 0
    assert "no change (2 rows); no version made" in capsys.readouterr().out
    # a bad row: exit 1, the message names file, row and column
    bad = tmp_path / "bad.csv"
    bad.write_text("item,valid_from,price\nA1,2026-01-01,1\nA2,2026-13-01,2\n", encoding="utf-8")
    assert run(["catalog", "--config", cfg, "load", "prices", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: row 2, column valid_from" in err
    assert "nothing was loaded" in err
    # show: all rows, or what store S2 receives (no zone prices)
    assert run(["catalog", "--config", cfg, "show", "prices", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert run(["catalog", "--config", cfg, "show", "prices", "--store", "S2", "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert shown == [{"item": "A1", "valid_from": "2026-01-01", "price": 100}]
    # for people, amounts as money in the store's currency; without a store or a chain-wide
    # Currency setting the places are unknown and said so, never guessed
    assert run(["catalog", "--config", cfg, "show", "prices", "--store", "S2"]) == 0
    assert "1.00 EUR" in capsys.readouterr().out
    assert run(["catalog", "--config", cfg, "show", "prices"]) == 0
    table = capsys.readouterr().out
    assert "100 minor units" in table
    assert "90 minor units" in table
    assert run(["catalog", "--config", cfg, "show", "stores"]) == 0
    assert "Main St" in capsys.readouterr().out
    # diff and history
    assert run(["catalog", "--config", cfg, "diff", "1", "2", "--json"]) == 0
    changes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["dataset"], c["key"]) for c in changes] == [  # code point order: Z < |
        ("prices", "A1||Z1|2026-01-01"),
        ("prices", "A1|||2026-01-01"),
    ]
    assert run(["catalog", "--config", cfg, "diff", "0", "9"]) == 2
    assert "version 9 does not exist" in capsys.readouterr().err
    assert run(["catalog", "--config", cfg, "history", "--json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [(h["version"], h["dataset"], h["added"]) for h in hist] == [
        (1, "stores", 2),
        (2, "prices", 2),
    ]
    assert run(["catalog", "--config", cfg, "history"]) == 0
    assert "prices" in capsys.readouterr().out
    # prune: keep the last version only; diff into the dropped history is refused
    assert run(["catalog", "--config", cfg, "prune", "--keep", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == 1
    assert run(["catalog", "--config", cfg, "history", "--json"]) == 0
    assert [h["version"] for h in json.loads(capsys.readouterr().out)] == [2]
    assert run(["catalog", "--config", cfg, "diff", "1", "2"]) == 2
    assert "before version 2 was pruned" in capsys.readouterr().err
    assert run(["catalog", "prune", "--before", "2", "--config", cfg]) == 0  # either place
    assert "nothing to prune" in capsys.readouterr().out


def test_no_database_yet_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "headoffice.toml"
    path.write_text(f'[database]\npath = "{tmp_path / "none.db"}"\n', encoding="utf-8")
    assert run(["catalog", "--config", str(path), "history"]) == 2
    assert "no head-office database yet" in capsys.readouterr().err
