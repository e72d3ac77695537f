"""Pydantic models for requests, stored records, events and worker info. No I/O."""
