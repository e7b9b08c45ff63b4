"""The small key/value records both stores keep in their ``meta`` table, written once."""

from __future__ import annotations

from datetime import datetime

from bot.domain.models import ChannelRef


class MetaRecords:
    """Watermarks and the channel reference, on top of a store's ``_get_meta``/``_set_meta``."""

    async def _get_meta(self, key: str) -> str | None:
        raise NotImplementedError

    async def _set_meta(self, key: str, value: str) -> None:
        raise NotImplementedError

    async def get_watermark(self, source: str) -> datetime | None:
        """The last ``lastUpdateDateTime`` fully ingested from ``source``."""
        value = await self._get_meta(f"watermark:{source}")
        return None if value is None else datetime.fromisoformat(value)

    async def set_watermark(self, source: str, value: datetime) -> None:
        """Advance the watermark of ``source``."""
        await self._set_meta(f"watermark:{source}", value.isoformat())

    async def get_channel(self) -> ChannelRef | None:
        """The incident channel captured from the installation, if any."""
        value = await self._get_meta("channel")
        return None if value is None else ChannelRef.model_validate_json(value)

    async def set_channel(self, channel: ChannelRef) -> None:
        """Remember the incident channel."""
        await self._set_meta("channel", channel.model_dump_json())
