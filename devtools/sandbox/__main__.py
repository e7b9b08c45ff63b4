"""``python -m devtools.sandbox --scenario PATH --port N``: run a sandbox tenant until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from devtools.sandbox import DEMO_SCENARIO, SandboxTenant


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox",
        description="Run a local Entra ID + Microsoft Graph tenant over TLS on loopback.",
    )
    parser.add_argument("--scenario", type=Path, default=DEMO_SCENARIO, help="YAML or JSON file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--cert-dir", type=Path, default=None, help="where to write the CA PEM (default: a temp dir)"
    )
    parser.add_argument(
        "--sync-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run a directory sync every SECONDS (it undoes cloud-side disables of synced users); "
        "default: never",
    )
    parser.add_argument(
        "--throttle",
        action="store_true",
        help="answer 429 where Microsoft documents Graph throttling (Identity Protection 1/s per "
        "tenant, security alerts 150/min, identity and access token buckets)",
    )
    return parser.parse_args(argv)


async def _serve(arguments: argparse.Namespace) -> None:
    tenant = SandboxTenant(
        arguments.scenario,
        cert_dir=arguments.cert_dir,
        sync_interval=arguments.sync_interval,
        throttling=arguments.throttle,
    )
    await tenant.start(arguments.host, arguments.port)
    try:
        print(f"authority_host  {tenant.authority_host}")
        print(f"authority       {tenant.authority}")
        print(f"graph_base_url  {tenant.graph_base_url}")
        print(f"ca_pem_path     {tenant.ca_pem_path}")
        print(f"tenant_id       {tenant.tenant_id}")
        print(f"client_id       {tenant.client_id}")
        print(f"client_secret   {tenant.client_secret}")
        print("Ctrl-C stops the sandbox.", flush=True)
        await asyncio.Event().wait()
    finally:
        await tenant.stop()
        for violation in tenant.violations:
            print(f"contract violation: {violation}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m devtools.sandbox``."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_arguments(argv)))


if __name__ == "__main__":
    main()
