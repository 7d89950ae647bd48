"""The example configs under systemd/ are real: they parse, and they show every key."""

from __future__ import annotations

import tomllib
from pathlib import Path

from agent import config as agent_config
from headoffice import config as ho_config

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"


def test_agent_example_parses_to_the_defaults() -> None:
    cfg = agent_config.load(SYSTEMD / "agent.example.toml")
    assert (cfg.lane.store, cfg.lane.lane) == ("S001", "L1")
    assert cfg.replication == agent_config.ReplicationConfig()
    assert cfg.broker == agent_config.BrokerConfig()


def test_headoffice_example_parses_to_the_defaults() -> None:
    cfg = ho_config.load(SYSTEMD / "headoffice.example.toml")
    assert cfg.broker == ho_config.HoBrokerConfig()
    assert cfg.ingest == ho_config.IngestConfig()


def test_agent_example_documents_every_replication_key() -> None:
    text = tomllib.loads((SYSTEMD / "agent.example.toml").read_text())
    assert set(text["replication"]) == set(agent_config.ReplicationConfig.__dataclass_fields__)
