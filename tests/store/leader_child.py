"""A replica in miniature for the multi-process leader test.

``python -m tests.store.leader_child URL NAME`` opens a :class:`PostgresStore`, calls
``try_lead(NAME)`` every 50 ms, and prints ``leader`` or ``follower`` each time its role changes
(the first role included), until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from bot.store.postgres import PostgresStore


async def contend(url: str, name: str) -> None:
    store = PostgresStore(url, max_connections=2)
    await store.open()
    role = ""
    try:
        while True:
            now = "leader" if await store.try_lead(name) else "follower"
            if now != role:
                print(now, flush=True)
                role = now
            await asyncio.sleep(0.05)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(contend(sys.argv[1], sys.argv[2]))
