"""What the bot does in the Microsoft 365 tenant, each capability behind the Graph client: alert
polling (``intake``), identity resolution (``identities``, ``resolver``), the directory facts
policy needs (``directory``) and the containment executors with read-back (``actions``)."""
