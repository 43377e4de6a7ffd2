"""Reliability suite options and the figures hook.

`pytest tests/reliability --soak` enables the long runs (without it they are skipped; the
option is declared in tests/conftest.py so it works from any directory).
With `KVMEDIA_RELIABILITY_LOG=<file>` every test outcome and every figure a test records
(`figures.add(group, key, n)` / `figures.max(group, key, value)`) is appended to that file as
one JSON line; tools/reliability_report.py turns the lines into REPORT.md.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long reliability run, needs --soak")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long run: pass --soak (pytest tests/reliability --soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get("KVMEDIA_RELIABILITY_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry: dict[str, Any] = {"kind": "outcome", "test": report.nodeid,
                                 "outcome": report.outcome,
                                 "seconds": round(report.duration, 3)}
        if report.outcome != "passed":
            entry["reason"] = str(report.longrepr)[-500:]
        _log(entry)


class Figures:
    def __init__(self, test: str) -> None:
        self.test = test

    def add(self, group: str, key: str, n: float = 1) -> None:
        _log({"kind": "figure", "test": self.test, "group": group, "key": key, "op": "add",
              "value": n})

    def max(self, group: str, key: str, value: float) -> None:
        _log({"kind": "figure", "test": self.test, "group": group, "key": key, "op": "max",
              "value": value})


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid)
