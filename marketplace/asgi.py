"""The ASGI entry point for process managers (`uvicorn marketplace.asgi:app --workers N`)."""

from marketplace.app import create_app

app = create_app()
