"""The `/_emulator/*` control API: config, reset, time, faults, stats and every task.

Tests and benchmarks drive the emulator through these endpoints over HTTP, as any client
could (`EmulatorServer`'s helpers call them), never by patching it. They take no API key:
the emulator is a local test double, and its control API is how a test sets the scene.
Errors answer in PiAPI's envelope, so one client-side reader serves both APIs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from klingflow.emulator.clock import format_time
from klingflow.emulator.config import FaultRule
from klingflow.emulator.responses import error

if TYPE_CHECKING:
    from klingflow.emulator.app import Emulator

__all__ = ["control_router"]


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The request's JSON object body ({} when empty), or None when it is not one."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def control_router(emulator: Emulator) -> APIRouter:
    """The control API's routes, bound to one emulator (its app serves exactly one)."""
    router = APIRouter(prefix="/_emulator")

    @router.get("/config")
    async def get_config() -> dict[str, Any]:
        """The config in force, API keys masked."""
        return emulator.public_config()

    @router.patch("/config")
    async def patch_config(request: Request) -> Response:
        """Change top-level fields of the config; all or nothing (400 names the problem)."""
        try:
            emulator.configure(await request.json())
        except ValueError as invalid:
            return error(400, f"invalid emulator config: {invalid}")
        return JSONResponse(emulator.public_config())

    @router.post("/reset")
    async def reset(request: Request) -> Response:
        """Forget tasks, stats, faults and files; `keep_config` keeps the config patched."""
        body = await _json_object(request)
        if body is None:
            return error(400, 'the reset body must be a JSON object such as {"keep_config": true}')
        await emulator.reset(keep_config=bool(body.get("keep_config")))
        return JSONResponse({"reset": True})

    @router.get("/time")
    async def get_time() -> dict[str, Any]:
        """The emulated time and how fast it runs."""
        now = emulator.clock.now()
        return {
            "now": format_time(now),
            "epoch_seconds": now,
            "time_scale": emulator.clock.time_scale,
        }

    @router.post("/time")
    async def set_time(request: Request) -> Response:
        """Change the speed and/or jump forward; what falls due meanwhile happens at once."""
        body = await _json_object(request)
        if body is None:
            return error(400, "the time body must be a JSON object")
        scale, step = body.get("time_scale"), body.get("advance_seconds", 0)
        if not isinstance(step, int | float) or isinstance(step, bool) or step < 0:
            return error(400, "advance_seconds: must be a number >= 0 (the clock never goes back)")
        if scale is not None:
            try:
                emulator.configure({"time_scale": scale})
            except ValueError as invalid:
                return error(400, f"time_scale: {invalid}")
        if step:
            emulator.clock.advance(float(step))
            emulator.store.advance()
        return JSONResponse(await get_time())

    @router.get("/stats")
    async def stats(tasks: bool = True) -> dict[str, Any]:
        """What clients did, in total, per key id and per task (see `stats`); `?tasks=false`
        leaves out the per-task counters, which grow with every task created."""
        emulator.store.advance()  # count what is due by now, as a patient client would see it
        return emulator.stats.to_json(
            peak_concurrency=emulator.store.peak_concurrency,
            peak_by_key=emulator.store.peak_by_key,
            per_task=tasks,
        )

    @router.get("/faults")
    async def faults() -> list[dict[str, object]]:
        """The fault rules in force, each with its remaining hits."""
        return emulator.faults.rules()

    @router.post("/faults")
    async def add_faults(request: Request) -> Response:
        """Arm one rule or a list of them; a bad rule arms none."""
        try:
            body = await request.json()
            items = body if isinstance(body, list) else [body]
            rules = [FaultRule.model_validate(item) for item in items]
        except ValueError as invalid:
            return error(400, f"invalid fault rule: {invalid}")
        for rule in rules:  # all or nothing
            emulator.faults.add(rule)
        return JSONResponse(emulator.faults.rules())

    @router.delete("/faults")
    async def clear_faults() -> dict[str, bool]:
        """Disarm every fault rule."""
        emulator.faults.clear()
        return {"cleared": True}

    @router.get("/tasks")
    async def tasks() -> dict[str, Any]:
        """Every key's tasks as PiAPI shows them: the view no single key has."""
        emulator.store.advance()
        return {"tasks": [task.to_json() for task in emulator.store.tasks.values()]}

    return router
