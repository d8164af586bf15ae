"""Running the API on uvicorn, one process or several workers."""

from __future__ import annotations

import importlib.util
import ipaddress

import uvicorn

from interlock.http.settings import ServeSettings

FACTORY = "interlock.http.app:app_from_environment"


def is_loopback(host: str) -> bool:
    """Only a loopback address (or `localhost`) may be served without tokens."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(settings: ServeSettings, host: str, port: int, workers: int, log_level: str) -> None:
    """Serves until interrupted. Workers are separate processes, each with its own index
    following the same store; settings reach them through the environment."""
    settings.to_environment()
    uvicorn.run(
        FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=False, server_header=False,
    )
