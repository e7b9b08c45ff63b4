"""The ``remediation-bot`` command line: ``main`` (serve, migrate, and the development commands),
``audit`` (verify, checkpoint, export the audit trail) and ``doctor`` (check a real tenant's setup)."""
