from ragledger.events import store
from ragledger.events.envelope import NewEvent


async def test_append_and_read(db):
    async with db.sessionmaker() as session, session.begin():
        recorded = await store.append(
            session, "s-1", [NewEvent("Thing", {"a": 1})], expected_version=0
        )
    async with db.sessionmaker() as session:
        events = await store.read_all(session)
    assert [e.position for e in events] == [1]
    assert events[0].hash == recorded[0].hash
    assert events[0].metadata == {}
