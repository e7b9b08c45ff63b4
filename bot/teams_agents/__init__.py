"""The Teams transport on the Microsoft 365 Agents SDK (``TEAMS_SDK=agents``)."""
