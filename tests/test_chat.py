"""A conversation on the tiny model: ordering of stores, stopping, notes in the prompt, a
statement said back; and which note retrieval picks."""

from __future__ import annotations

import pytest

from assistant.chat import ChatSession
from assistant.errors import InvalidMessageError
from assistant.prompting import NOTES_HEADER, NOTES_REPLY_PREFIX, acknowledgement
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
        "Tell me about red bikes.", on_piece=lambda _: counts_while_streaming.append(store.count())
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


def test_a_statement_is_said_back_and_is_a_note_at_once(session_parts):
    store, engine = session_parts
    session = ChatSession(store, engine)
    shown: list[str] = []
    reply = session.respond("Let me tell you that my daughter's name is Elowen.", shown.append)
    assert reply.text == "Got it: your daughter's name is Elowen." == "".join(shown)
    assert [t.text for t in store.conversation(session.conversation_id)][1] == reply.text
    assert session.notes == ["Let me tell you that my daughter's name is Elowen."]
    prompt, _ = session.prompt("What is my daughter called?")  # the same conversation
    assert prompt.messages[-1]["content"].startswith(f"{NOTES_HEADER}\n- Let me tell you")
    assert prompt.reply_prefix == NOTES_REPLY_PREFIX


def test_todays_notes_from_every_conversation_are_in_the_prompt_and_questions_never(
    session_parts,
):
    store, engine = session_parts
    first = ChatSession(store, engine)
    first.respond("My sister is called Ana.")
    first.respond("I moved to Porto.")
    first.respond("Who is my sister?")  # a question: never a note
    first.respond("Remind me who my sister is.")  # a request: never a note
    second = ChatSession(store, engine)
    assert second.notes == ["My sister is called Ana.", "I moved to Porto."]
    prompt, _ = second.prompt("What is my sister called?")
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[1]["content"] == (
        f"{NOTES_HEADER}\n- My sister is called Ana.\n\nWhat is my sister called?"
    )
    assert prompt.reply_prefix == NOTES_REPLY_PREFIX
    for unrelated in ("Tell me a joke.", "What is frozen water called?"):
        alone, _ = second.prompt(unrelated)  # nothing asked about is in a note
        assert alone.messages[1]["content"] == unrelated
        assert alone.reply_prefix == ""


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
    assert index.select("what is my dog called", k=1) == ["My dog is called Rex."]  # naming
    assert index.select("where does my dog live", k=1) == ["My dog now lives with my mum."]
    assert index.select("what is my dog called", k=2) == [
        "My dog is called Rex.",
        "My dog now lives with my mum.",
    ]
    assert index.select("anything at all", k=3) == []  # no shared word, no note


def test_a_note_must_hold_what_is_asked_about_not_only_shared_words():
    index = MemoryIndex(["My brother-in-law is called Torvald.", "I work at Drosu Analytics."])
    for asked in ("What is my name?", "What is it called?", "Is my name called?"):
        assert index.select(asked, k=1) == []  # only "called", "name", "my", "is" shared
    assert index.select("What is my nephew called?", k=1) == []  # a relation not told
    assert index.select("What is frozen water called?", k=1) == []
    assert index.select("Which company employs me?", k=1) == ["I work at Drosu Analytics."]


def test_retrieval_matches_word_forms_and_prefers_the_correction():
    index = MemoryIndex(
        ["I live in Oslo.", "My car is a red van.", "Correction, I now live in Lima."]
    )
    assert index.select("Where am I living?", k=1) == ["Correction, I now live in Lima."]
    assert index.select("What cars do I own?", k=1) == ["My car is a red van."]
    assert index.select("What do I drive?", k=1) == ["My car is a red van."]


def test_a_statement_is_said_back_in_the_second_person():
    assert acknowledgement("Let me tell you that my hobby is sketching boats.") == (
        "Got it: your hobby is sketching boats."
    )
    assert acknowledgement("I was born in May and I am a nurse. We live in Porto") == (
        "Got it: you were born in May and you are a nurse. You live in Porto."
    )
    assert acknowledgement("My dentist appointment is at 11:30 am.").endswith("11:30 am.")
    # Said back from the clause its first person is in, never from the middle of one.
    assert acknowledgement("Correction, the company I work for is now Mearu.") == (
        "Got it: the company you work for is now Mearu."
    )
    assert acknowledgement("On weekends I go sailing.") == "Got it: On weekends you go sailing."
    long = "My dog is Rex. " + "He likes long walks in the park. " * 20
    said = acknowledgement(long)
    assert said.startswith("Got it: your dog is Rex.") and len(said) < 300


def test_ten_statements_of_the_held_out_phrasings_are_said_back_with_their_value(
    session_parts,
):
    from assistant.recall.benchmark import RecallSettings, is_correct, plan

    store, engine = session_parts
    day = plan(RecallSettings(seed=0, facts_per_night=10, updates_per_night=0))[0]
    said = [text for turns in day.conversations for text in turns]
    values = tuple(fact.value for fact in day.facts)
    session = ChatSession(store, engine)
    for fact in day.facts:
        statement = next(text for text in said if fact.value in text)
        reply = session.respond(statement)
        assert is_correct(reply.text, fact.value, values), (statement, reply.text)
