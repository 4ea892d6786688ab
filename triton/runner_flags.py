"""The command lines of the runners that start gateways (`make serve`, `make cluster`): their own
flags, and the gateway's, which they pass on. Both kinds are checked before anything starts (a
mistake, or a setting the gateway would refuse, ends in one line) and listed by --help.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gateway.settings import Settings, add_settings_arguments, load_settings
from gateway.tenancy.gatekeeper import startup_problem

# The runners' own flags, which they give the gateway themselves (the model version is
# Triton's too: the gateway reads the manifest of the version its Tritons serve).
RUNNER_SETTINGS = ("host", "port", "model_repository", "model_version")


def description(doc: str) -> str:
    """The first paragraph of a module docstring, as --help's description."""
    return " ".join(doc.split("\n\n", 1)[0].split())


def parse_runner_arguments(
    argv: list[str] | None, prog: str, doc: str, own: Callable[[argparse.ArgumentParser], None]
) -> tuple[argparse.Namespace, list[str], argparse.ArgumentParser]:
    """The runner's arguments (`own` adds them to a parser), the gateway's flags as given, and
    the parser that knows both (for `.error`)."""
    complete = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [flags] [gateway flags]",
        description=description(doc),
        allow_abbrev=False,
        # The runner's own flags come last and take any spelling they share with the gateway
        # (Triton's --grpc-port beside the gateway's --grpc_port).
        conflict_handler="resolve",
    )
    add_settings_arguments(
        complete.add_argument_group("gateway flags (passed on to python -m gateway)"),
        exclude=RUNNER_SETTINGS,
    )
    own(complete)
    complete.parse_args(argv)
    runner = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own(runner)
    args, gateway_flags = runner.parse_known_args(argv)
    return args, gateway_flags, complete


def gateway_settings(gateway_flags: list[str], host: str, port: int) -> Settings:
    """The settings the gateway will have; one line and exit 2 for any it would refuse."""
    settings = load_settings([*gateway_flags, "--host", host, "--port", str(port)])
    if problem := startup_problem(settings):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    return settings
