"""The sub-request limit a model instance puts on its workers (workers/context.py)."""

from __future__ import annotations

import asyncio

import pytest

from scaffolding_backend.workers.context import RequestContext, SubRequestSlots


def test_slots_cap_the_sub_requests_in_flight_and_report_each_change():
    changes: list[int] = []
    slots = SubRequestSlots(2, on_change=changes.append)
    context = RequestContext(slots=slots)
    most = 0

    async def sub_request() -> None:
        nonlocal most
        async with context.slot():
            most = max(most, slots.in_flight)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(sub_request() for _ in range(5)))

    asyncio.run(main())
    assert most == 2
    assert slots.in_flight == 0
    assert len(changes) == 10 and max(changes) == 2 and changes[-1] == 0


def test_a_failed_sub_request_gives_its_slot_back():
    slots = SubRequestSlots(1)
    context = RequestContext(slots=slots)

    async def main() -> None:
        with pytest.raises(RuntimeError):
            async with context.slot():
                raise RuntimeError("the model refused")
        # the only slot is free again: this would wait forever otherwise
        await asyncio.wait_for(_hold_once(context), timeout=1)

    asyncio.run(main())
    assert slots.in_flight == 0


async def _hold_once(context: RequestContext) -> None:
    async with context.slot():
        pass


def test_without_a_limit_there_is_nothing_to_hold():
    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(_hold_once(RequestContext()) for _ in range(1000))), timeout=1
        )

    asyncio.run(main())
