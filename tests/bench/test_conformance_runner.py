"""``make conformance`` without node: it says skipped and why, and succeeds; the report's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import conformance


def test_without_node_it_is_skipped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(conformance.shutil, "which", lambda tool: None)
    assert conformance.main([]) == 0
    assert capsys.readouterr().out.startswith("conformance: skipped (node and npm not found")


def test_without_the_suite_it_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(conformance.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setenv("CACHE_TESTS_DIR", str(tmp_path))
    assert conformance.main([]) == 0
    assert "skipped (no test suite at" in capsys.readouterr().out


def test_report_lists_ours_then_the_published_ones_and_every_failure() -> None:
    ours = [{"name": "redis", "required": [150, 160], "optimal": [80, 105],
             "failing": [["a-test", "required", "Assertion: Response 2 comes from cache"]]}]
    published = [{"name": "Squid", "version": "6", "required": [138, 160], "optimal": [59, 105]},
                 {"name": "httpd", "version": "2", "required": [141, 160], "optimal": [69, 105]}]
    lines = conformance.report(ours, published).splitlines()
    assert lines[1].split() == ["gateway", "(redis)", "150/160", "80/105"]
    assert lines[2].startswith("httpd") and lines[3].startswith("Squid")  # most required first
    assert "  a-test [required]: Assertion: Response 2 comes from cache" in lines
