"""Use cases: what the bot does when an alert arrives, a card is clicked, time passes or a
responder types a command.

The use cases hold no transport details: Teams is behind :class:`Messenger`, Graph behind
:class:`bot.graph.GraphClient` and :class:`bot.tenant.directory.Directory`, state behind
:class:`bot.store.base.Store`. Every decision about a request is made by the pure functions in
:mod:`bot.domain.approval`; every decision, refusal and result lands in the audit trail.

One use case per module:

- :mod:`~bot.services.ports`: the ports (:class:`Messenger`, :class:`Ports`), the settings
  (:class:`ServiceSettings`) and :class:`CardAnswer`;
- :mod:`~bot.services.channel`: registering the incident channel, refusing foreign activities;
- :mod:`~bot.services.intake`: alerts into cases, ``contain``, settling unresolved people;
- :mod:`~bot.services.publishing`: posting and updating cards, coalescing, escalation notes
  (with :mod:`~bot.services.card_lease` and :mod:`~bot.services.enrichment`);
- :mod:`~bot.services.clicks`: request, approve, reject, cancel, retry, refresh;
- :mod:`~bot.services.execution`: the job queue, starting, taking over, finishing;
- :mod:`~bot.services.reporting`: result replies and write-back to the alerts;
- :mod:`~bot.services.sweeper`: expiry, reminders, re-checks, cards left behind;
- :mod:`~bot.services.queries`: the reads behind the chat commands;
- shared plumbing: :mod:`~bot.services.audit_log`, :mod:`~bot.services.tasks`,
  :mod:`~bot.services.transitions` (the one place a request changes state),
  :mod:`~bot.services.views` (cards rendered from state);
- :mod:`~bot.services.service`: :class:`RemediationService`, the use cases composed into the
  one object the Teams handler, the chat commands and the app talk to.
"""

from bot.services.execution import EXECUTE_JOB, LATE_NOTE
from bot.services.ports import CardAnswer, Messenger, Ports, ServiceSettings
from bot.services.publishing import REPOSTED_NOTE, SPARE_NOTE
from bot.services.reporting import RESENT_MARKER
from bot.services.service import RemediationService
from bot.services.transitions import Transition

__all__ = [
    "EXECUTE_JOB",
    "LATE_NOTE",
    "REPOSTED_NOTE",
    "RESENT_MARKER",
    "SPARE_NOTE",
    "CardAnswer",
    "Messenger",
    "Ports",
    "RemediationService",
    "ServiceSettings",
    "Transition",
]
