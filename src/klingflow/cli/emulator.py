"""`klingflow emulator`: run the local PiAPI emulator in the foreground."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
import yaml

from klingflow.cli._ports import require_free_port
from klingflow.emulator import EmulatorConfig, create_app
from klingflow.emulator.server import KEEP_ALIVE_SECONDS

__all__ = ["emulator"]


def load_config(path: Path | None) -> dict[str, Any]:
    """Read an emulator config file (YAML or JSON); the file's errors name the file."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a mapping of settings")
    return data


def emulator(
    host: Annotated[str, typer.Option(help="Interface to bind; loopback by default.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    time_scale: Annotated[
        float | None,
        typer.Option(help="Run the emulated clock X times faster (100: 60 s takes 0.6 s)."),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accepted key (repeatable); none: any non-empty key."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML or JSON file of emulator settings.")
    ] = None,
) -> None:
    """Run a local PiAPI (Kling task API) emulator for offline work and integration tests."""
    settings = load_config(config)
    if time_scale is not None:
        settings["time_scale"] = time_scale
    if api_key:
        settings["api_keys"] = api_key
    try:
        emulator_config = EmulatorConfig.model_validate(settings)
    except ValueError as error:
        raise typer.BadParameter(f"invalid emulator settings: {error}") from None
    require_free_port(host, port)
    typer.echo(
        f"PiAPI emulator on http://{host}:{port}  (time scale x{emulator_config.time_scale:g}; "
        f"control API at /_emulator/, docs at /docs)"
    )
    uvicorn.run(
        create_app(emulator_config),
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
