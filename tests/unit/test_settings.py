from __future__ import annotations

import msgspec
import pytest

from service.settings import Settings


def test_defaults_match_the_documented_ones() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/metreg"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_values_are_converted() -> None:
    settings = Settings.from_env({"METREG_PORT": "9000", "METREG_LOG_FORMAT": "text", "UNRELATED": "x"})
    assert settings.port == 9000
    assert settings.log_format == "text"


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(msgspec.ValidationError, match="METREG_PORT"):
        Settings.from_env({"METREG_PORT": "eighty"})


def test_env_example_lists_every_variable() -> None:
    from pathlib import Path

    from service.settings import ENVIRONMENT

    example = (Path(__file__).parents[2] / ".env.example").read_text()
    for variable in ENVIRONMENT.values():
        assert f"\n{variable}=" in example, variable
