"""A conversation on the tiny model: ordering of stores, stopping, memories in the prompt."""

from __future__ import annotations

import pytest

from assistant.chat import ChatSession
from assistant.errors import InvalidMessageError
from assistant.prompting import NOTES_HEADER, NOTES_REPLY_PREFIX
from assistant.retrieval import MemoryIndex


@pytest.fixture
def session_parts(model_home):
    from assistant.runtime import Runtime

    runtime = Runtime()
    engine = runtime.load_engine()
    yield runtime.memory, engine
    engine.close()


def test_user_turn_is_stored_before_the_reply_is_generated(session_parts):
    store, engine = session_parts
    session = ChatSession(store, engine)
    counts_while_streaming = []
    reply = session.respond(
        "Remember: my bike is red.", on_piece=lambda _: counts_while_streaming.append(store.count())
    )
    assert counts_while_streaming and set(counts_while_streaming) == {1}
    assert reply is not None and store.count() == 2
    assert [t.role for t in store.conversation(session.conversation_id)] == ["user", "assistant"]


def test_stopping_keeps_exactly_what_was_shown(session_parts):
    store, engine = session_parts
    session = ChatSession(store, engine, max_reply_tokens=64)
    shown: list[str] = []
    reply = session.respond(
        "Tell me a long story.", on_piece=shown.append, should_stop=lambda: len(shown) >= 3
    )
    assert len(shown) == 3
    assert reply.text == "".join(shown).strip()


def test_todays_memories_from_other_conversations_are_in_the_prompt(session_parts):
    store, engine = session_parts
    first = ChatSession(store, engine)
    first.respond("My sister is called Ana.")
    first.respond("I moved to Porto.")
    second = ChatSession(store, engine)
    prompt, _ = second.prompt("What is my sister called?")
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[1]["content"] == (
        f"{NOTES_HEADER}\n- My sister is called Ana.\n\nWhat is my sister called?"
    )
    assert prompt.reply_prefix == NOTES_REPLY_PREFIX
    unrelated, _ = second.prompt("Tell me a joke.")  # shares no word with any note
    assert unrelated.messages[1]["content"] == "Tell me a joke."
    assert unrelated.reply_prefix == ""


def test_message_too_long_for_the_context_is_refused_before_storing(session_parts):
    store, engine = session_parts
    session = ChatSession(store, engine)
    with pytest.raises(InvalidMessageError, match="too long for the model"):
        session.respond("word " * 5000)
    assert store.count() == 0


def test_retrieval_picks_the_best_matches_in_the_order_said():
    notes = [
        "My dog is called Rex.",
        "I moved to Porto.",
        "My dog now lives with my mum.",
        "I like tea.",
    ]
    index = MemoryIndex(notes)
    assert index.select("what is my dog called", k=1) == ["My dog is called Rex."]
    assert index.select("what is my dog called", k=2) == [
        "My dog is called Rex.",
        "My dog now lives with my mum.",
    ]
    assert index.select("anything at all", k=3) == []  # no shared word, no note
