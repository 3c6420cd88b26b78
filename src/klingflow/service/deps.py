"""Annotated dependencies: what a route needs from the running service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from klingflow.settings import Settings
from klingflow.workflows.engine import Engine
from klingflow.workflows.registry import WorkflowRegistry
from klingflow.workflows.runlog import RunLog

__all__ = ["EngineDep", "RegistryDep", "RunLogDep", "SettingsDep"]


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    """The app's launched engine (its run log, client and queues)."""
    engine: Engine = request.app.state.engine
    return engine


def get_runlog(request: Request) -> RunLog:
    """The engine's run log: every route reads the same database the engine writes."""
    return get_engine(request).runlog


def get_registry(request: Request) -> WorkflowRegistry:
    """The published workflows, in the engine's database."""
    registry: WorkflowRegistry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
RunLogDep = Annotated[RunLog, Depends(get_runlog)]
RegistryDep = Annotated[WorkflowRegistry, Depends(get_registry)]
