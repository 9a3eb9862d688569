"""Settings: YAML < .env < environment < flags, and errors that name the line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.settings import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchyard.yaml"
    path.write_text(text)
    return path


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, "port: 1111\nhost: 127.0.0.2\nlog_level: debug\n")
    (tmp_path / ".env").write_text("SWITCHYARD_PORT=2222\nSWITCHYARD_LOG_LEVEL=warning\n")
    monkeypatch.setenv("SWITCHYARD_PORT", "3333")
    s = load_settings(cfg)
    assert (s.host, s.port, s.log_level) == ("127.0.0.2", 3333, "warning")
    assert load_settings(cfg, port=4444).port == 4444


def test_static_keys_from_env_are_comma_separated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWITCHYARD_API_KEY", "sk-first-key, sk-second-key")
    assert [k.get_secret_value() for k in load_settings().api_keys] == ["sk-first-key", "sk-second-key"]
    assert "sk-first" not in repr(load_settings()) and "sk-first" not in load_settings().model_dump_json()


def test_nested_env_configures_providers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWITCHYARD_DEFAULT_PROVIDER", "ollama")
    monkeypatch.setenv("SWITCHYARD_PROVIDERS__OLLAMA__TYPE", "ollama")
    monkeypatch.setenv("SWITCHYARD_PROVIDERS__OLLAMA__BASE_URL", "http://10.1.2.3:11434")
    s = load_settings()
    assert s.default_provider == "ollama" and s.providers["ollama"].base_url == "http://10.1.2.3:11434"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("models:\n  - alias: a\n    provider: openai\n    base_url: http://x/v1\n    timeout: -1\n",
         "line 5: models.0.timeout"),
        ("models:\n  - alias: a\n    provider: nowhere\n", "line 3: models.0.provider: unknown provider 'nowhere'"),
        ("models:\n  - alias: a\n    provider: openai\n", "line 2: models.0: base_url is required"),
        ("providers:\n  p:\n    type: grpc\n    base_url: x\n", "line 3: providers.p.type"),
        ("models:\n  - alias: a\n   provider: x\n", "line 3: invalid YAML"),
        ("portt: 1\n", "line 1: portt: Extra inputs are not permitted"),
        ("providers:\n  p:\n    type: ollama\n    base_url: localhost:11434\n", "line 4: providers.p.base_url"),
        ("models:\n  - alias: a\n    provider: openai\n    base_url: ftp://x/v1\n", "line 4: models.0.base_url"),
        ("models:\n  - alias: a\n    deployments:\n      - provider: openai\n        base_url: http:///v1\n",
         "line 5: models.0.deployments.0.base_url"),
        ("models:\n  - alias: a\n    provider: openai\n    base_url: http://x/v1\n"
         "  - alias: a\n    provider: openai\n    base_url: http://x/v1\n", "line 5: models.1.alias: duplicate"),
    ],
)
def test_errors_name_the_line_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                        needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert needle in str(info.value)


def test_env_reference_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(write(tmp_path, "providers:\n  o:\n    type: openai\n    base_url: http://x/v1\n"
                                      "    api_key: os.environ/UPSTREAM_TOKEN\n"))
    with pytest.raises(ConfigError, match="UPSTREAM_TOKEN"):
        s.resolve_secret(s.providers["o"].api_key)
    monkeypatch.setenv("UPSTREAM_TOKEN", "tok-123")
    assert s.resolve_secret(s.providers["o"].api_key) == "tok-123"


def test_a_dotenv_with_other_tools_variables_does_not_break_start(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nCOMPOSE_PROJECT_NAME=sy\nSWITCHYARD_PORT=9191\n")
    assert load_settings().port == 9191
    with pytest.raises(ConfigError, match="portt"):  # the YAML file is still strict
        load_settings(write(tmp_path, "portt: 1\n"))
