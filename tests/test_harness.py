"""The test harness itself: in CI (``CI`` set) a test that cannot run fails; elsewhere it skips."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from conftest import missing_data, require_module, skip_or_fail


@pytest.mark.parametrize("ci", ["1", ""])
def test_a_test_that_cannot_run_fails_in_ci_and_skips_elsewhere(ci: str, monkeypatch) -> None:
    monkeypatch.setenv("CI", ci)
    expected = Failed if ci else Skipped
    for call in (
        lambda: skip_or_fail("no chromium"),
        lambda: missing_data("TyDi data"),
        lambda: require_module("no_such_module_for_regtune_tests"),
    ):
        with pytest.raises(expected) as err:
            call()
        assert ("this is a failure" if ci else "in CI this fails instead") in str(err.value)


def test_require_module_returns_the_module() -> None:
    assert require_module("json").dumps([1]) == "[1]"
