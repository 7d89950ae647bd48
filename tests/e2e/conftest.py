"""The `cluster` fixture: a real broker, head office, agents, proxies and tills, all torn down.

Head office and every agent run as separate processes through lanesync.stack (sd_notify
readiness, SIGTERM/SIGKILL). Whatever a test starts through the fixture is stopped at teardown,
in order (tills, agents, head office, proxies; the broker by broker_factory), even when the
test fails.

Every test here runs three times: on Mosquitto, on NATS's MQTT listener and on RabbitMQ's MQTT
plugin (`broker_kind`, ids `mosquitto`, `nats` and `rabbitmq`). A test that needs something a
server lacks carries `@pytest.mark.broker_lacks(nats="reason", rabbitmq="reason")`: on each
server named it becomes a strict xfail, so it fails loudly the day that server has the feature.
"""

from __future__ import annotations

import pytest

from tests.e2e.e2e_cluster import cluster  # noqa: F401 - the fixture

BROKER_KINDS = ("mosquitto", "nats", "rabbitmq")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker_lacks(**reasons): the test needs an MQTT feature the servers named lack "
        "(keyword: broker kind, value: why); strict xfail on those servers",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Turn `broker_lacks` into a strict xfail on the runs of the servers it names."""
    for item in items:
        mark = item.get_closest_marker("broker_lacks")
        if mark is None:
            continue
        unknown = set(mark.kwargs) - set(BROKER_KINDS)
        if unknown or mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: broker_lacks takes keywords {BROKER_KINDS}, got "
                f"{sorted(unknown) or mark.args}"
            )
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("broker_kind") if callspec is not None else None
        if kind in mark.kwargs:
            item.add_marker(pytest.mark.xfail(reason=mark.kwargs[kind], strict=True))


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Overrides the top-level fixture: every end-to-end test runs on all three servers."""
    kind: str = request.param
    return kind
