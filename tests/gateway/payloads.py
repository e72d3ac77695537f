"""Request bodies and small HTTP helpers shared by the gateway tests."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

# The body of the seed FAQ's curl example, verbatim.
SEED_BODY: dict[str, Any] = {
    "model_type": "bert",
    "data_path": "/data/sentiment_analysis.csv",
    "hyperparameters": {"epochs": 5, "learning_rate": 0.001, "batch_size": 16},
    "description": "BERT sentiment analysis training",
    "requires_gpu": False,
}


async def submit(client: AsyncClient, model_type: str = "noop", **hyperparameters: Any) -> str:
    """POST /jobs/training; the new job's id."""
    r = await client.post("/jobs/training", json={"model_type": model_type,
                                                  "hyperparameters": hyperparameters})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


async def status_of(client: AsyncClient, job_id: str) -> dict[str, Any]:
    r = await client.get(f"/jobs/{job_id}/status")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def in_status(client: AsyncClient, job_id: str, *wanted: str) -> Any:
    """A check for ``eventually``: the job's status view once it is in one of ``wanted``."""

    async def check() -> dict[str, Any] | None:
        view = await status_of(client, job_id)
        return view if view["status"] in wanted else None

    return check
