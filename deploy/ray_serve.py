"""Ray Serve entry point: ``serve run deploy.ray_serve:app_builder model=/models/judge num_gpus=1``.

The code lives in :mod:`services.ray_serve` (an installed package, so Ray workers on any node can import it);
this file only re-exports it for running from a checkout. ``services.ray_serve:app_builder`` works the same.
"""

from services.ray_serve import (
    GenRMIngress,
    GenRMServer,
    GroupAffinityRouter,
    RayServeArgs,
    app_builder,
    build_app,
)

__all__ = ["GenRMIngress", "GenRMServer", "GroupAffinityRouter", "RayServeArgs", "app_builder", "build_app"]
