"""Test items for ``--em-model``: one per gate item, ids ``emguard::<check>[<name>]``, marker ``emguard``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_emguard.errors import EmguardError

if TYPE_CHECKING:
    from pytest_emguard.session import EmguardSession

__all__ = ["EmguardCollector", "EmguardItem", "GateFailure", "add_items"]


class GateFailure(Exception):
    """Raised by an item that failed or was inconclusive; carries the rendered message."""


class EmguardCollector(pytest.Collector):
    def __init__(self, *, emguard: EmguardSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emguard = emguard

    def collect(self) -> list[pytest.Item]:
        return [
            EmguardItem.from_parent(self, name=item.id, emguard=self.emguard)
            for item in self.emguard.run.items()
        ]


class EmguardItem(pytest.Item):
    def __init__(self, *, emguard: EmguardSession, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.emguard = emguard
        self.add_marker("emguard")

    def runtest(self) -> None:
        from pytest_emguard.report import failure_text

        self.emguard.ran_items = True
        try:
            result = self.emguard.results()[self.name]
        except EmguardError as exc:
            raise GateFailure(str(exc)) from None
        if result.outcome == "pass":
            return
        text = failure_text(result, self.emguard.run.options)
        if result.outcome == "inconclusive" and result.on_inconclusive == "skip":
            pytest.skip(text)
        if result.outcome == "inconclusive" and result.on_inconclusive == "pass":
            return
        raise GateFailure(text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"emguard::{self.name}"


def add_items(session: pytest.Session, emguard: EmguardSession, items: list[pytest.Item]) -> None:
    collector = EmguardCollector.from_parent(
        session, name="emguard", nodeid="emguard", path=session.config.rootpath, emguard=emguard
    )
    # through genitems, so collection hooks fire and the terminal counts the items ("collected 11 items")
    items[:0] = session.genitems(collector)
