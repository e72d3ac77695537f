"""HTTP routes, one module per resource.

The app includes each module's router itself, jobs first: FastAPI matches a request by walking
the included routers in order, and every level of nesting costs each request a pass of its own.
"""

from fastapi import APIRouter

from gateway.routes import dashboard, events, health, jobs, logs, metrics, queues, workers, ws

ROUTERS: tuple[APIRouter, ...] = (jobs.router, queues.router, workers.router, health.router,
                                  metrics.router, events.router, logs.router, ws.router,
                                  dashboard.router)
