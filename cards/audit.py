"""The audit checkpoint line under a result reply in the thread.

Kept apart from the reply's own rendering: the line is added to whatever
:func:`cards.replies.render_result_reply` produced. It holds only what the bot computed (a
sequence number, hex digests and a key id), never text from an alert or a person.
"""

from __future__ import annotations

from bot.domain.audit import Checkpoint


def with_audit_checkpoint(text: str, checkpoint: Checkpoint | None) -> str:
    """``text`` followed by ``Audit checkpoint #123 · 9f2c… · k-… · mac 3e5a…`` (unchanged when
    the trail is empty). An auditor gives the line to ``remediation-bot audit verify --checkpoints``."""
    if checkpoint is None:
        return text
    return f"{text}\n\n{checkpoint.text()}"
