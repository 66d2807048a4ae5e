"""The upstream settings of a service: urls, balance, retries, outlier detection, and their one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.settings import ConfigError, load_settings
from gateway.config.upstream import BudgetSettings, OutlierSettings, RetrySettings, service_targets


def menu(**raw: Any) -> Any:
    return load_settings({}, {"services": {"menu": {"prefix": "/menus", **raw}}}).services["menu"]


def test_one_url_is_as_before_retries_off() -> None:
    orders = load_settings({}).services["order-service"]
    assert orders.urls == () and service_targets(orders) == ("http://127.0.0.1:3002",)
    assert orders.retries is None and orders.balance == "round_robin"
    assert orders.outlier == OutlierSettings(consecutive_failures=5, ejection_time=30, max_ejection_time=300)


def test_urls_balance_retries_and_outlier_detection() -> None:
    svc = menu(urls=["http://10.0.0.1:4000/", "https://menu-2.internal"], balance="least_outstanding",
               retries={"attempts": 3, "backoff": {"base": 0.05, "max": 1}, "budget": {"percent": 10,
                                                                                        "min_retries": 5,
                                                                                        "window": 30}},
               outlier_detection={"consecutive_failures": 2, "ejection_time": 5, "max_ejection_time": 60})
    assert svc.urls == ("http://10.0.0.1:4000", "https://menu-2.internal") and svc.url == "http://10.0.0.1:4000"
    assert svc.balance == "least_outstanding"
    assert svc.retries == RetrySettings(attempts=3, backoff_base=0.05, backoff_max=1,
                                        budget=BudgetSettings(percent=10, min_retries=5, window=30))
    assert svc.outlier == OutlierSettings(consecutive_failures=2, ejection_time=5, max_ejection_time=60)


@pytest.mark.parametrize("on", [True, "on", "true"])
def test_retries_on_takes_the_defaults(on: Any) -> None:
    assert menu(url="http://x", retries=on).retries == RetrySettings()
    assert RetrySettings() == RetrySettings(attempts=2, backoff_base=0.025, backoff_max=0.25,
                                            budget=BudgetSettings(percent=20, min_retries=3, window=10))


@pytest.mark.parametrize("off", [False, "off", None])
def test_off(off: Any) -> None:
    svc = menu(urls=["http://a", "http://b"], retries=off, outlier_detection=off)
    assert svc.retries is None and svc.outlier is None


def test_one_item_in_urls_is_one_url_and_a_builtin_can_get_several() -> None:
    assert menu(urls=["http://a"]).urls == ()
    orders = load_settings({}, {"services": {"order-service": {"urls": ["http://a:1", "http://b:1"]}}})
    assert service_targets(orders.services["order-service"]) == ("http://a:1", "http://b:1")


@pytest.mark.parametrize(("raw", "setting", "message"), [
    ({"url": "http://a", "urls": ["http://b"]}, "urls", "set either url (one target) or urls (several), not both"),
    ({"urls": []}, "urls", "expected a list of URLs"),
    ({"urls": "http://a"}, None, None),  # one URL as a string is accepted
    ({"urls": ["http://a", "http://a/"]}, "urls", "http://a is listed twice"),
    ({"urls": ["http://a", "ftp://b"]}, "urls", "expected a http/https URL, got 'ftp://b'"),
    ({"url": "http://a", "balance": "random"}, "balance", "expected round_robin or least_outstanding"),
    ({"url": "http://a", "retries": {"attempts": 1}}, "retries.attempts", "expected 2-10, got 1"),
    ({"url": "http://a", "retries": {"attempts": 2.5}}, "retries.attempts", "expected a whole number"),
    ({"url": "http://a", "retries": {"attempt": 2}}, "retries.attempt",
     "unknown key 'attempt'; did you mean 'attempts'"),
    ({"url": "http://a", "retries": {"budget": {"percent": 150}}}, "retries.budget.percent",
     "is a percentage of requests (0-100), got 150"),
    ({"url": "http://a", "retries": {"budget": 20}}, "retries.budget", "expected a mapping of min_retries, percent"),
    ({"url": "http://a", "retries": {"budget": {"window": 0}}}, "retries.budget.window", "more than 0"),
    ({"url": "http://a", "retries": {"budget": {"min_retries": -1}}}, "retries.budget.min_retries", ">= 0"),
    ({"url": "http://a", "retries": {"backoff": {"base": 1, "max": 0.5}}}, "retries.backoff.max",
     "must be at least the base (1), got 0.5"),
    ({"url": "http://a", "retries": "sometimes"}, "retries", "expected a mapping of attempts, backoff, budget"),
    ({"url": "http://a", "outlier_detection": {"consecutive_failures": 0}}, "outlier_detection.consecutive_failures",
     "expected 1-1000"),
    ({"url": "http://a", "outlier_detection": {"ejection_time": 0}}, "outlier_detection.ejection_time",
     "greater than 0"),
    ({"url": "http://a", "outlier_detection": {"ejection_time": 60, "max_ejection_time": 10}},
     "outlier_detection.max_ejection_time", "must be at least the ejection_time (60), got 10"),
])
def test_bad_values_name_the_setting(raw: dict[str, Any], setting: str | None, message: str | None) -> None:
    if setting is None:
        menu(**raw)
        return
    with pytest.raises(ConfigError) as caught:
        menu(**raw)
    assert caught.value.setting == f"GATEWAY_CONFIG services.menu.{setting}"
    assert message in caught.value.message


def test_a_new_service_needs_url_or_urls() -> None:
    with pytest.raises(ConfigError, match="a new service needs 'prefix' and 'url' \\(or 'urls'\\)"):
        load_settings({}, {"services": {"menu": {"prefix": "/menus"}}})


def test_the_file_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("services:\n  menu:\n    prefix: /menus\n    urls: [http://a, http://b]\n"
                    "    retries:\n      budget: {percent: 120}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_CONFIG": str(path)})
    assert str(caught.value) == ("invalid setting GATEWAY_CONFIG services.menu.retries.budget.percent: is a "
                                 f"percentage of requests (0-100), got 120 (at {path}:6:25)")
