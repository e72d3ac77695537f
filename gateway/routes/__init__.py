"""HTTP routes, one module per resource."""

from fastapi import APIRouter

from gateway.routes import health, jobs, metrics, queues, workers

api_router = APIRouter()
api_router.include_router(jobs.router)
api_router.include_router(queues.router)
api_router.include_router(workers.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)
