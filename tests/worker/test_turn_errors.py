"""An unexpected failure in a turn tells the chat's owner what happened without the internals
(issue 9, item 4): a database error's SQL and parameters go to the log, never to the chat."""

from __future__ import annotations

from sqlalchemy import update

from chatd.domain.chat import ChatStatus
from chatd.store.tables import model_configs
from tests.fakes.llm_server import Reply, TokenUsage
from tests.worker.conftest import Rig


async def test_a_database_error_in_a_turn_shows_no_sql_to_the_member(rig: Rig) -> None:
    # A price stored before the API bounded it: tokens x price overflows the 64-bit cost column.
    async with rig.app.db.write() as conn:
        await conn.execute(update(model_configs).values(pricing={"input": 10**30, "output": 10**30}))
    rig.llm.script(Reply(text="Hello.", usage=TokenUsage(input=100, output=10)))
    chat = await rig.chat("hi")
    await rig.run()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.ERROR and done.last_error
    for leak in ("[SQL", "INSERT", "VALUES", "$1", "sqlalchemy", "parameters"):
        assert leak not in done.last_error, done.last_error


def test_an_unexpected_error_quoting_credentials_reaches_the_chat_redacted() -> None:
    from chatd.worker.turn import internal_error_text

    exc = RuntimeError("GET https://bob:hunter2@api.example/v1 failed; Authorization: Bearer chatd_s3cr3tTokenValue")
    text = internal_error_text(exc)
    assert text.startswith("Internal error: RuntimeError: GET https://")
    for leak in ("hunter2", "chatd_s3cr3tTokenValue"):
        assert leak not in text, text
