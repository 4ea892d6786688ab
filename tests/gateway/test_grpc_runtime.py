"""The gateway's gRPC runtime settings: its default, the operator's choice, and their timing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway import grpc_runtime


def test_default_keeps_socket_io_on_the_polling_thread() -> None:
    env = grpc_runtime.environment({})
    assert env[grpc_runtime.EXPERIMENTS_VARIABLE] == grpc_runtime.POLL_IN_CALLER


def test_operators_setting_wins() -> None:
    env = grpc_runtime.environment({grpc_runtime.EXPERIMENTS_VARIABLE: "chosen"})
    assert env[grpc_runtime.EXPERIMENTS_VARIABLE] == "chosen"


def test_too_late_once_grpc_is_loaded() -> None:
    import grpc  # noqa: F401  (loaded, as in this test process)

    with pytest.raises(RuntimeError, match="before grpc is imported"):
        grpc_runtime.apply()


def test_the_gateway_entry_point_applies_them_before_grpc_loads() -> None:
    """`python -m gateway` sets them, and only then imports what loads grpc."""
    probe = (
        "import contextlib, os, sys\n"
        "from gateway.__main__ import main\n"
        "assert 'grpc' not in sys.modules\n"
        "with contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(os.environ['GRPC_EXPERIMENTS'], 'grpc' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != grpc_runtime.EXPERIMENTS_VARIABLE}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"{grpc_runtime.POLL_IN_CALLER} True"
