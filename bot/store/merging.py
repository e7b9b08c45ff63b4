"""Moved to :mod:`bot.domain.merging` (the rules are domain rules); kept for old imports."""

from bot.domain.merging import BOT_ACTOR, OPEN_REQUEST_STATES, MergePlan, cancelled_for_merge, plan_merges

__all__ = ["BOT_ACTOR", "OPEN_REQUEST_STATES", "MergePlan", "cancelled_for_merge", "plan_merges"]
