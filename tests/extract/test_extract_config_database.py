"""`[database]` is read by one function (headoffice.config.parse_database) for head office and
for the extract; only head office refuses keys it does not know."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from headoffice import config as ho_config
from headoffice.extract import config as extract_config
from protocol.errors import ConfigError


@pytest.mark.parametrize("parse", [ho_config.parse, extract_config.parse])
def test_both_sides_apply_the_same_rules(parse: Callable[[dict[str, Any]], object]) -> None:
    with pytest.raises(ConfigError, match=r"database\.url: set database\.path .* not both"):
        parse({"database": {"path": "/x.db", "url": "postgresql://h/db"}})
    with pytest.raises(ConfigError, match="must be a postgresql:// URL, got 'mysql'"):
        parse({"database": {"url": "mysql://h/db"}})


def test_the_extract_reads_what_head_office_reads() -> None:
    ho = ho_config.parse({"database": {"path": "/srv/ho.db"}})
    x = extract_config.parse({"database": {"path": "/srv/ho.db"}})
    assert (
        (ho.database, ho.database_url) == (x.database, x.database_url) == (Path("/srv/ho.db"), None)
    )
    default = extract_config.parse({})
    assert default.database == ho_config.parse({}).database == ho_config.DEFAULT_DATABASE


def test_only_head_office_refuses_unknown_database_keys() -> None:
    with pytest.raises(ConfigError, match=r"database\.nope: unknown key"):
        ho_config.parse({"database": {"nope": 1}})
    assert extract_config.parse({"database": {"nope": 1}}).database == ho_config.DEFAULT_DATABASE
