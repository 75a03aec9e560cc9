"""Config loading: strictness, error messages naming file/path/expectation, env, durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import ConfigError, load, load_text
from configs.reader import parse_duration, parse_size

BASE = """
backends:
  a: {kind: mock}
models:
  m: {deployments: [a]}
"""


def test_default_config_loads() -> None:
    cfg = load(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")
    assert {"mock-small", "mock-large", "mock-embedding"} <= set(cfg.models)
    assert cfg.models["mock-embedding"].type == "embedding"
    assert all(b.kind == "mock" for b in cfg.backends.values())


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600),
                                               ("1.5s", 1.5), ("2d", 172800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [30, "30", "thirty seconds", "-1s", None])
def test_durations_need_units(bad: object) -> None:
    with pytest.raises(ValueError, match="unit"):
        parse_duration(bad)


def test_sizes() -> None:
    assert parse_size("4MiB") == 4 * 1024 * 1024
    assert parse_size("1kb") == 1000
    assert parse_size(512) == 512


def test_unknown_key_names_file_path_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_text(BASE.replace("{deployments: [a]}", "{deployments: [a], balnce: weighted}"), "prod.yaml")
    message = str(err.value)
    assert message.startswith("prod.yaml: models.m.balnce: unknown key")
    assert "balance" in message


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"^x.yaml: servr: unknown key"):
        load_text("servr: {}\n" + BASE, "x.yaml")


def test_wrong_type_says_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"server.port: expected an integer; got 'eighty'"):
        load_text("server: {port: eighty}\n" + BASE)
    with pytest.raises(ConfigError, match=r"backends.a.timeouts.connect: expected a duration"):
        load_text(BASE.replace("{kind: mock}", "{kind: mock, timeouts: {connect: 5}}"))
    with pytest.raises(ConfigError, match=r"models.m.balance: expected one of round_robin"):
        load_text(BASE.replace("{deployments: [a]}", "{deployments: [a], balance: fastest}"))


def test_references_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"models.m.deployments\[0\]: unknown backend 'b'"):
        load_text(BASE.replace("[a]", "[b]"))
    with pytest.raises(ConfigError, match=r"models.m.fallbacks\[0\]"):
        load_text(BASE.replace("{deployments: [a]}", "{deployments: [a], fallbacks: [ghost]}"))


def test_url_required_for_http_kinds() -> None:
    with pytest.raises(ConfigError, match=r"backends.a.url: is required for kind vllm"):
        load_text(BASE.replace("{kind: mock}", "{kind: vllm}"))


def test_env_interpolation() -> None:
    text = BASE.replace("{kind: mock}", '{kind: openai, url: "${UP_URL}", api_key: "${KEY:-none}"}')
    cfg = load_text(text, env={"UP_URL": "http://10.0.0.1:8000/"})
    assert cfg.backends["a"].url == "http://10.0.0.1:8000"
    assert cfg.backends["a"].api_key == "none"
    with pytest.raises(ConfigError, match=r"backends.a.url: environment variable UP_URL is not set"):
        load_text(text, env={})


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_text("models: [unclosed", "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read file"):
        load(tmp_path / "missing.yaml")


def test_config_is_frozen() -> None:
    cfg = load_text(BASE)
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]


def test_deployment_weights() -> None:
    cfg = load_text(BASE.replace("[a]", "[{backend: a, weight: 3}]"))
    assert cfg.models["m"].deployments[0].weight == 3.0
