"""The HTTP service: a JSON API over the engine, run triggers and PiAPI's webhooks.

`create_app(settings)` builds it; `klingflow serve` runs it on uvicorn (docs/service.md).
"""

from klingflow.service.app import EngineFactory, create_app

__all__ = ["EngineFactory", "create_app"]
