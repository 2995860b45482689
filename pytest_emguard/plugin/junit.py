"""``--junitxml``: each gate item's figures (``collect.properties``: outcome, role, base, fine-tune, interval, ...)
where the XML family allows them.  xunit1 (and legacy) allow ``<properties>`` inside a ``<testcase>``: the items
record them there, as ``record_property`` does.  xunit2, pytest's default family, follows the JUnit schema that
allows properties on the ``<testsuite>`` only: there they go, each named ``NODEID::emguard.KEY``, as
``record_testsuite_property`` writes them."""

from __future__ import annotations

import pytest

__all__ = ["SuiteProperties", "register"]

PREFIX = "emguard."  # the names collect.properties gives


def register(config: pytest.Config) -> None:
    """Under xunit2, move the items' figures to the test suite (in the process that writes the XML: the xdist
    controller, which receives each worker's reports with their properties)."""
    if hasattr(config, "workerinput") or config.getini("junit_family") != "xunit2":
        return
    config.pluginmanager.register(SuiteProperties(config), "emguard_junit_suite_properties")


class SuiteProperties:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before pytest's junitxml reads the teardown report's ``user_properties`` into the testcase."""
        if report.when != "teardown":
            return
        ours = [(str(name), value) for name, value in report.user_properties if str(name).startswith(PREFIX)]
        if not ours:
            return
        report.user_properties[:] = [p for p in report.user_properties if not str(p[0]).startswith(PREFIX)]
        from _pytest.junitxml import xml_key  # the writer behind pytest's own record_testsuite_property

        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            for name, value in ours:
                xml.add_global_property(f"{report.nodeid}::{name}", str(value))
