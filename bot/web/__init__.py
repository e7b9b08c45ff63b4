"""The HTTP edge: ``create_app`` (the composition root, with the probes), the alert push endpoint
and its parsing (``push``), safe reading of untrusted JSON (``jsonguard``) and ``/metrics``."""
