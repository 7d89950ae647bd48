"""The lane's TOML keeps identity, connection and paths: keys whose values moved to head
office's catalog are refused by name, with where the value lives now."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from protocol.errors import ConfigError

BASE = 'store = "S1"\nlane = "L1"\n[api]\nsocket = "/tmp/x.sock"\n'


@pytest.mark.parametrize(
    ("extra", "named", "pointer"),
    [
        ('[documents]\ncurrency = "EUR"\n', "documents.currency", "stores dataset"),
        ('[documents]\ntimezone = "UTC"\n', "documents.timezone", "timezone"),
        (
            '[[tax.rates]]\ncode = "VAT"\nfrom = 2024-01-01\nrate_bp = 2000\n',
            "tax.rates",
            "[tax] rates moved to head office: lanesync catalog load tax_rates FILE",
        ),
        (
            "[purchasing]\nreceive_no_unexp = true\n",
            "purchasing.receive_no_unexp",
            "PurchReceiveNoUnexp",
        ),
        (
            "[transit]\nallow_courier = false\n",
            "transit.allow_courier",
            "PurchTransitAllowCourier",
        ),
        ("[transit]\nprompt_qty = false\n", "transit.prompt_qty", "SaleTransitPromptQty"),
    ],
)
def test_moved_keys_are_refused_by_name_with_a_pointer(
    tmp_path: Path, extra: str, named: str, pointer: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    message = str(exc.value)
    assert f"{named}: " in message, message
    assert pointer in message, message
    assert str(path) in message


def test_what_stays_in_the_lanes_toml(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        BASE + '[documents]\nregister_prefix = "T1"\n[transit]\ngs1_company_prefix = "5703538"\n'
        'sscc_lane_prefix = "01"\n[catalog]\ntrade_without = true\n',
        encoding="utf-8",
    )
    cfg = config.load(path)
    assert cfg.documents.register_prefix == "T1"
    assert cfg.transit.gs1_company_prefix == "5703538"
    assert cfg.catalog.trade_without is True
    assert config.load_toml is not None


def test_a_config_without_a_catalog_table_trades_without_one(tmp_path: Path) -> None:
    """The built-in default is a lab's (see agent.config.CatalogConfig); a chain's lanes set
    trade_without = false, as the example does."""
    path = tmp_path / "agent.toml"
    path.write_text(BASE, encoding="utf-8")
    assert config.load(path).catalog.trade_without is True


def test_the_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "systemd" / "agent.example.toml"
    cfg = config.load(example)
    assert cfg.catalog.trade_without is False
