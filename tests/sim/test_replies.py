"""Replies that follow the conversation: varied echoes, the length of spoken turns, answers from memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.sim.replies import UserTurn, answer, asks_about_the_conversation

from .helpers import memory_connection, silence, tone
from .test_agent_sim import PATH as AGENT_PATH
from .test_agent_sim import ready
from .test_openai_sim import PATH as OPENAI_PATH
from .test_openai_sim import open_session, user_text


def typed(*texts: str) -> list[UserTurn]:
    return [UserTurn(text=t) for t in texts]


def test_echoes_vary_from_turn_to_turn() -> None:
    replies = [answer(typed(*["hello"] * n)) for n in range(1, 6)]
    assert replies == [
        "You said: hello.",
        "I heard you say: hello.",
        "Got it. You said: hello.",
        "Understood: hello.",
        "You said: hello.",
    ]


def test_a_spoken_turn_is_answered_with_its_length() -> None:
    assert answer([UserTurn(speech_ms=400)]) == "I heard about 1 second of speech."
    assert answer([UserTurn(speech_ms=2600)]) == "I heard about 3 seconds of speech."


def test_a_question_about_the_conversation_is_answered_from_memory() -> None:
    assert answer(typed("What did I say?")) == "This is the first thing you have said to me."
    assert answer(typed("the sky is green", "What did I just say?")) == 'Before this you said "the sky is green".'
    conversation = [*typed("good morning"), UserTurn(speech_ms=2100), *typed("do you remember what I asked?")]
    assert answer(conversation) == (
        'Before this you said about 2 seconds of speech; you started with "good morning" (2 turns so far).'
    )


def test_what_counts_as_a_question_about_the_conversation() -> None:
    for text in ("what did I say", "What have I told you?", "what was my last question", "Do you remember me?"):
        assert asks_about_the_conversation(text), text
    for text in ("what is the weather", "say something", "I said hello"):
        assert not asks_about_the_conversation(text), text


def test_empty_and_long_messages() -> None:
    assert answer([]) == "How can I help you?"
    assert answer(typed("  ?! ")) == "I did not catch that."
    long = answer(typed("word " * 100))
    assert long.startswith("You said: word word")
    assert long.endswith("….")
    assert len(long) < 120


turns = st.lists(
    st.one_of(
        st.builds(UserTurn, text=st.text(max_size=200)),
        st.builds(UserTurn, speech_ms=st.floats(min_value=0, max_value=600_000)),
    ),
    max_size=8,
)


@given(turns)
def test_any_conversation_gets_a_short_deterministic_answer(conversation: list[UserTurn]) -> None:
    reply = answer(conversation)
    assert reply
    assert reply == answer(list(conversation))
    assert len(reply) < 300


# -- through the simulators (every event validated by the official models) -----------------------------------------


async def test_the_realtime_simulator_remembers_the_conversation() -> None:
    async with memory_connection(OPENAI_PATH) as ws:
        client = await open_session(ws, output_modalities=["text"])
        texts = []
        for message in ("my name is Ada", "I like tea", "what did I say before?"):
            await client.send(user_text(message))
            await client.until("conversation.item.done")
            await client.send({"type": "response.create"})
            events = await client.until("response.done")
            texts.append(next(e for e in events if e["type"] == "response.output_text.done")["text"])
    assert texts == [
        "You said: my name is Ada.",
        "I heard you say: I like tea.",
        'Before this you said "I like tea"; you started with "my name is Ada" (2 turns so far).',
    ]


async def test_the_voice_agent_simulator_remembers_a_spoken_turn() -> None:
    async with memory_connection(AGENT_PATH) as ws:
        client = await ready(ws)
        pcm = tone(2000, 16000) + silence(900, 16000)
        for i in range(0, len(pcm), 3200):
            await client.ws.send_message(pcm[i : i + 3200])
        spoken = await client.until("ConversationText", lambda m: m["role"] == "assistant")
        assert spoken[-1]["content"] == "I heard about 2 seconds of speech."
        await client.until("AgentAudioDone")
        await client.send({"type": "InjectUserMessage", "content": "What did I say?"})
        reply = await client.until("ConversationText", lambda m: m["role"] == "assistant")
    assert reply[-1]["content"] == "Before this you said about 2 seconds of speech."
