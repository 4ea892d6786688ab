"""`python -m gateway [flags]`: serve the gateway with uvicorn (see `--help`)."""

from __future__ import annotations

import sys

from gateway import grpc_runtime


def main(argv: list[str] | None = None) -> None:
    grpc_runtime.apply()
    # Imported only now: they load grpc, which reads its settings once, when loaded.
    from gateway.model_info import ModelInfo
    from gateway.processes.leftovers import remove_leftovers
    from gateway.processes.server import serve
    from gateway.processes.workers import supervise
    from gateway.settings import load_settings
    from gateway.tenancy.gatekeeper import startup_problem

    settings = load_settings(argv)
    if problem := startup_problem(settings):
        sys.exit(f"gateway: {problem}")
    try:  # a model version that is not there: one line, not a traceback in every worker
        ModelInfo.load(settings.model_repository, settings.model_version)
    except (OSError, ValueError) as exc:
        sys.exit(f"gateway: {exc}")
    remove_leftovers()  # of gateways on this host killed outright
    if settings.workers == 1:
        serve(settings)
    else:
        sys.exit(supervise(settings))


if __name__ == "__main__":
    main(sys.argv[1:])
