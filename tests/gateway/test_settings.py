"""Gateway settings: every Settings field is a flag (both spellings) and an `A2F_*` variable,
flags win over the environment, and a bad value is a one-line usage error."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from gateway.settings import Settings, load_settings

# A value unlike the default for each field type, as text and as the field holds it.
SAMPLES: dict[type, tuple[str, object]] = {
    str: ("30000/1001", "30000/1001"),  # valid for every str field, fps included
    int: ("7", 7),
    float: ("2.5", 2.5),
    Path: ("/tmp/elsewhere", Path("/tmp/elsewhere")),
}
FIELDS = [f for f in msgspec.structs.fields(Settings) if f.type in SAMPLES]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_field_is_a_flag_in_both_spellings_and_an_environment_variable(field) -> None:
    text, value = SAMPLES[field.type]
    dashed = field.name.replace("_", "-")
    assert getattr(load_settings([f"--{field.name}", text], {}), field.name) == value
    assert getattr(load_settings([f"--{dashed}", text], {}), field.name) == value
    environ = {f"A2F_{field.name.upper()}": text}
    assert getattr(load_settings([], environ), field.name) == value


def test_flags_override_the_environment_and_defaults_stay() -> None:
    settings = load_settings(["--max_sessions", "3"], {"A2F_MAX_SESSIONS": "9", "A2F_FPS": "30"})
    assert (settings.max_sessions, settings.fps) == (3, "30")
    assert settings.port == Settings().port


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, True),
        (["--no-use_gpu_solver"], {}, False),
        (["--no-use-gpu-solver"], {}, False),
        (["--use_gpu_solver"], {"A2F_USE_GPU_SOLVER": "0"}, True),
        ([], {"A2F_USE_GPU_SOLVER": "false"}, False),
        ([], {"A2F_USE_GPU_SOLVER": "yes"}, True),
    ],
)
def test_use_gpu_solver_is_a_switch(argv: list[str], environ: dict, expected: bool) -> None:
    assert load_settings(argv, environ).use_gpu_solver is expected


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "x"], {}, "argument --port: invalid int value: 'x'"),
        ([], {"A2F_PORT": "x"}, "A2F_PORT: invalid int value: 'x'"),
        ([], {"A2F_USE_GPU_SOLVER": "maybe"}, "A2F_USE_GPU_SOLVER: invalid bool value"),
        (["--port", "70000"], {}, "port 70000 out of range"),
        (["--fps", "fast"], {}, "fps: frame rate must look like 30 or 30000/1001, got 'fast'"),
        (["--fps", "0"], {}, "fps: frame rate must be positive, got '0'"),
    ],
)
def test_a_bad_value_is_one_usage_error_line(
    argv: list[str], environ: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(argv, environ)
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("python -m gateway: error: ")
    assert message in error


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([], {}, ["127.0.0.1:8001"]),
        (["--triton_url", "a:1", "--triton-url", "b:2"], {}, ["a:1", "b:2"]),
        ([], {"A2F_TRITON_URLS": "a:1, b:2"}, ["a:1", "b:2"]),
        ([], {"A2F_TRITON_URL": "a:1"}, ["a:1"]),  # the one-endpoint spelling of old
        (["--triton_url", "c:3"], {"A2F_TRITON_URLS": "a:1,b:2"}, ["c:3"]),
    ],
)
def test_triton_urls_is_a_repeatable_flag_and_a_comma_separated_variable(
    argv: list[str], environ: dict, expected: list[str]
) -> None:
    assert load_settings(argv, environ).triton_urls == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"A2F_TRITON_URLS": "a:1,"}, "no empty entry"),
        ({"A2F_TRITON_URLS": "a:1,a:1"}, "lists an endpoint twice"),
    ],
)
def test_bad_triton_urls_are_one_usage_error_line(
    environ: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        load_settings([], environ)
    assert message in capsys.readouterr().err.splitlines()[-1]
