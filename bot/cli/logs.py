"""Logging for the command line: one format, the chatty libraries held at WARNING."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # botbuilder and msal are chatty at INFO; their warnings still show.
    for noisy in ("msal", "botbuilder", "botframework", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
