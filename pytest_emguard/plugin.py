"""pytest hooks of pytest-emguard.  Hook implementations only; each delegates.  Imports almost nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from pytest_emguard.errors import EmguardError

_KEY = "emguard_session"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_emguard import newhooks

    pluginmanager.add_hookspecs(newhooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_emguard.options import add_options

    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emguard: an emergent-misalignment gate item of pytest-emguard")
    from pytest_emguard.options import read_options

    try:
        options = read_options(config)
        if options is None:
            return
        from pytest_emguard.config import RunConfig

        run = RunConfig.resolve(options, _hook_checks(config))
    except EmguardError as exc:
        raise pytest.UsageError(f"pytest-emguard: {exc}") from None
    from pytest_emguard.session import EmguardSession

    config.pluginmanager.register(EmguardSession(config, run), _KEY)


def _hook_checks(config: pytest.Config) -> list[tuple[str, Any]]:
    found = []
    for impl in config.pluginmanager.hook.pytest_emguard_add_checks.get_hookimpls():
        kwargs = {name: config for name in impl.argnames}
        returned: Iterable[Any] = impl.function(**kwargs) or ()  # type: ignore[assignment]
        for check in returned:
            found.append((f"pytest_emguard_add_checks in {impl.plugin_name}", check))
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    emguard = config.pluginmanager.get_plugin(_KEY)
    if emguard is not None:
        from pytest_emguard.collect import add_items

        add_items(session, emguard, items)
