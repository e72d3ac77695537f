"""The reference of bench/http_submit.py: the least an HTTP submit can do on FastAPI.

``POST /jobs/training`` parses the JSON body, makes a job id and does one ``XADD`` of the job to
a stream, then answers 202 with the id; nothing else (no validation, no record, no events, no
idempotency, no limits). It runs under uvicorn exactly as the aiq gateway does (one process,
uvloop + httptools, uvicorn's own access log at its default level), so the ratio measures what
aiq adds on top of the framework and the one write.

    python -m bench._bare_submit REDIS_URL PORT
"""

from __future__ import annotations

import sys
import uuid

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from redis.asyncio import Redis

STREAM = "bare:training:queue"


def create_app(url: str) -> FastAPI:
    app = FastAPI()
    # Enough connections for every request in flight (redis-py's default pool refuses past 100).
    redis = Redis.from_url(url, decode_responses=True, max_connections=4096)

    @app.post("/jobs/training", status_code=202)
    async def submit(request: Request) -> Response:
        body = orjson.loads(await request.body())
        job_id = f"job_{uuid.uuid4()}"
        entry_id = await redis.xadd(STREAM, {"job_id": job_id, "model_type": body["model_type"]})
        return Response(orjson.dumps({"job_id": job_id, "status": "queued", "entry_id": entry_id}),
                        status_code=202, media_type="application/json")

    return app


def main() -> None:
    url, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(create_app(url), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
