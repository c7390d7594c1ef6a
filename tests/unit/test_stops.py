"""A stop request ends every running request with its id, and only those."""

from scaffolding_backend.engines.echo import EchoEngine
from scaffolding_backend.engines.generation import GenerationRequest, StopsByRequestId


def start(engine: EchoEngine, stops: StopsByRequestId, request_id: str):
    generations = [engine.submit(GenerationRequest("q", max_tokens=8))]
    stops.started(request_id, generations)
    return generations


def test_requests_sharing_an_id_stay_stoppable_when_one_of_them_finishes():
    engine = EchoEngine("one two three", delay_s=60)
    stops = StopsByRequestId()
    first, second, other = (start(engine, stops, id_) for id_ in ("0", "0", "1"))
    stops.finished("0", first)  # e.g. it ended on its own
    stops.stop("0")
    assert second[0].wait(1).finish_reason == "cancelled"
    assert not other[0].done.is_set()
    engine.close()


def test_a_stop_that_overtook_its_request_ends_it_on_arrival_and_only_once():
    engine = EchoEngine("one two three", delay_s=60)
    stops = StopsByRequestId()
    stops.stop("7")
    overtaken = start(engine, stops, "7")
    assert overtaken[0].wait(1).finish_reason == "cancelled"
    later = start(engine, stops, "7")  # the remembered stop was used up
    assert not later[0].done.is_set()
    engine.close()


def test_remembered_stops_expire_and_are_bounded():
    engine = EchoEngine("one two three", delay_s=60)
    stops = StopsByRequestId(memory_s=0.0, memory_size=2)
    stops.stop("a")
    stops.stop("b")  # "a" expired (memory_s=0)
    assert not start(engine, stops, "a")[0].done.is_set()
    bounded = StopsByRequestId(memory_size=2)
    for id_ in ("x", "y", "z"):
        bounded.stop(id_)
    assert not start(engine, bounded, "x")[0].done.is_set()  # the oldest was dropped
    assert start(engine, bounded, "z")[0].wait(1).finish_reason == "cancelled"
    engine.close()


def test_a_late_stop_is_dropped_and_leaves_the_next_request_with_that_id_alone():
    engine = EchoEngine("one two three", delay_s=60)
    stops = StopsByRequestId()
    first = start(engine, stops, "5")
    stops.finished("5", first)  # it ended on its own ...
    stops.stop("5")  # ... before its stop arrived
    reused = start(engine, stops, "5")
    assert not reused[0].done.is_set()
    stops.stop("5")  # a stop while it runs still ends it
    assert reused[0].wait(1).finish_reason == "cancelled"
    engine.close()
