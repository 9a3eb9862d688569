"""The web console (``/ui``): static pages and their session API, imported on the first ``/ui``
request only (see ``http/routes.py``), so a server whose console is never opened does not hold it."""
