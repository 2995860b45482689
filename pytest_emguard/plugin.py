"""pytest hooks of pytest-emguard.  Hook implementations only; each delegates.  Imports almost nothing."""

from __future__ import annotations

import pytest

from pytest_emguard.errors import EmguardError

_KEY = "emguard_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_emguard.options import add_options

    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emguard: an emergent-misalignment gate item of pytest-emguard")
    from pytest_emguard.options import read_settings

    try:
        settings = read_settings(config)
        if settings is None:
            return
        from pytest_emguard.backends.base import ModelSpec
        from pytest_emguard.judge import JudgeSpec
        from pytest_emguard.thresholds import Thresholds

        ModelSpec.resolve(settings.model, settings.base, trust_remote_code=settings.trust_remote_code)
        JudgeSpec.parse(settings.judge, settings.model)
        thresholds = Thresholds.load(settings.thresholds)
    except EmguardError as exc:
        raise pytest.UsageError(f"pytest-emguard: {exc}") from None
    from pytest_emguard.session import EmguardSession

    config.pluginmanager.register(EmguardSession(config, settings, thresholds), _KEY)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    gate = config.pluginmanager.get_plugin(_KEY)
    if gate is not None:
        from pytest_emguard.collect import add_items

        add_items(session, gate, items)
