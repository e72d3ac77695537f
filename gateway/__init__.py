"""HTTP gateway: the FastAPI app (``create_app``), routes by resource, one error envelope."""
