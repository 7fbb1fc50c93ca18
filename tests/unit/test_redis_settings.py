"""store.redis settings: URL schemes, prefix, env precedence, secrets masked."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from banditd.cli import main
from banditd.config import Settings, load_settings


def test_redis_url_must_be_redis_or_rediss():
    """Other schemes are refused at load time."""
    with pytest.raises(ValidationError, match="redis:// or rediss://"):
        Settings(store={"redis": {"url": "http://x"}})  # type: ignore[arg-type]
    assert Settings(store={"redis": {"url": "rediss://h:6380/0"}}).store.redis.url.startswith(  # type: ignore[arg-type]
        "rediss://"
    )


def test_key_prefix_may_not_contain_braces():
    """A brace would move the Cluster hash tag off the policy name."""
    with pytest.raises(ValidationError):
        Settings(store={"redis": {"key_prefix": "a{b}"}})  # type: ignore[arg-type]


def test_env_sets_nested_redis_fields(monkeypatch: pytest.MonkeyPatch):
    """BANDITD_STORE__REDIS__URL and friends reach store.redis."""
    monkeypatch.setenv("BANDITD_STORE__BACKEND", "redis")
    monkeypatch.setenv("BANDITD_STORE__REDIS__URL", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("BANDITD_STORE__REDIS__CLUSTER", "true")
    s = load_settings()
    assert (s.store.backend, s.store.redis.url, s.store.redis.cluster) == (
        "redis", "redis://127.0.0.1:6379/2", True,
    )  # fmt: skip


def test_check_config_masks_redis_secrets(monkeypatch, capsys):
    """The password and URL (which may embed one) are printed as ***."""
    monkeypatch.setenv("BANDITD_STORE__REDIS__PASSWORD", "hunter2")
    monkeypatch.setenv("BANDITD_STORE__REDIS__URL", "redis://:hunter2@h:6379/0")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert json.loads(out)["store"]["redis"]["password"] == "***"


@pytest.mark.parametrize("coalesce", [True, False])
def test_store_redis_coalesce_reaches_the_store(coalesce: bool, monkeypatch: pytest.MonkeyPatch):
    """store.redis.coalesce (default true) picks the coalesced path or the pooled one; the
    store is built without connecting."""
    from banditd.server.app import build_redis_store
    from banditd.state.coalescer import Coalescer

    assert Settings().store.redis.coalesce is True
    monkeypatch.setenv("BANDITD_STORE__REDIS__COALESCE", str(coalesce).lower())
    store = build_redis_store(load_settings())
    assert isinstance(store._coalescer, Coalescer) is coalesce
