"""The Chainlit-shaped workload: the data-layer calls a Chainlit 2.x server makes for a chat.

One chat turn, in the order Chainlit issues the calls (see ``chainlit/emitter.py``,
``callbacks.py``, ``message.py`` and ``step.py``):

1. ``create_step`` of the user message (``Message.to_dict()``: output = what was typed);
2. ``create_step`` of the ``on_message`` run step, child of the user message;
3. ``create_step`` of a tool step (``Step.__aenter__``), then ``update_step`` with its
   output (``Step.__aexit__``);
4. ``create_step`` of the assistant message with an empty output (``Message.send()``),
   then ``update_step`` with the final text (``Message.update()`` after streaming);
5. ``update_step`` of the run step (its ``__aexit__``);
6. on some turns, ``upsert_feedback`` on the run step (the thumbs under the answer).

On the first turn Chainlit also calls ``update_thread(name=<first message>, user_id)``
(``flush_thread_queues``); the session's metadata is written with ``update_thread`` when
the session ends. Everything is generated from a seed, so a run can be replayed exactly:
the reliability tests replay it against a layer they kill, then check that every call
they saw acknowledged is in the archive.

The module imports nothing from Chainlit at import time; :func:`replay` needs it.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Chainlit's own timestamp shape (``utc_now()``); they sort correctly as strings."""

MESSAGE_TYPES = frozenset(["user_message", "assistant_message", "system_message"])

# -- text that looks like chat ----------------------------------------------------------

TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sourdough bread", ("starter", "hydration", "crust", "proofing", "levain")),
    ("python packaging", ("wheel", "pyproject", "setuptools", "virtualenv", "pip")),
    ("kubernetes ingress", ("nginx", "certificate", "helm", "pod", "service")),
    ("tax return", ("deduction", "receipt", "invoice", "freelance", "quarterly")),
    ("marathon training", ("tempo", "interval", "taper", "cadence", "hydration")),
    ("postgres indexes", ("btree", "vacuum", "planner", "explain", "partial")),
    ("react hooks", ("useEffect", "useState", "memo", "render", "context")),
    ("garden tomatoes", ("blight", "pruning", "compost", "seedling", "mulch")),
    ("job interview", ("salary", "recruiter", "portfolio", "behavioral", "offer")),
    ("trip to Lisbon", ("tram", "pastel", "Alfama", "ferry", "miradouro")),
    ("home network", ("router", "mesh", "firmware", "VLAN", "bandwidth")),
    ("espresso machine", ("grinder", "tamping", "crema", "portafilter", "descale")),
    ("contract review", ("clause", "liability", "termination", "indemnity", "notice")),
    ("rust lifetimes", ("borrow", "ownership", "trait", "generic", "reference")),
    ("birthday party", ("invitation", "cake", "balloons", "playlist", "venue")),
    ("budget spreadsheet", ("formula", "pivot", "category", "forecast", "savings")),
    ("café crème brûlée", ("vanille", "caramélisé", "ramequin", "bain-marie", "sucre")),
    ("Deutsch lernen", ("Grammatik", "Wortschatz", "Aussprache", "Übung", "Prüfung")),
    ("machine learning", ("gradient", "overfitting", "embedding", "dataset", "epoch")),
    ("car insurance", ("premium", "deductible", "claim", "coverage", "accident")),
    ("docker compose", ("volume", "network", "healthcheck", "restart", "image")),
    ("sleep schedule", ("melatonin", "caffeine", "routine", "insomnia", "nap")),
    ("wedding speech", ("anecdote", "toast", "humor", "groom", "bride")),
    ("SQL window functions", ("partition", "rank", "lag", "frame", "aggregate")),
    ("learning guitar", ("chord", "strumming", "capo", "fingerpicking", "tuning")),
    ("climate data", ("anomaly", "baseline", "temperature", "NetCDF", "reanalysis")),
    ("日本旅行", ("新幹線", "京都", "温泉", "ラーメン", "切符")),
    ("customer email", ("refund", "apology", "shipping", "tracking", "warranty")),
    ("unit tests", ("fixture", "mock", "coverage", "assertion", "pytest")),
    ("moving house", ("boxes", "lease", "utilities", "movers", "checklist")),
)

_FILLER = (
    "the",
    "a",
    "it",
    "this",
    "that",
    "we",
    "you",
    "can",
    "should",
    "would",
    "about",
    "with",
    "when",
    "because",
    "usually",
    "first",
    "then",
    "also",
    "better",
    "simple",
    "step",
    "idea",
    "problem",
    "example",
    "option",
    "result",
    "time",
    "way",
    "part",
    "quick",
    "good",
    "small",
    "more",
    "less",
    "each",
    "every",
    "some",
    "most",
    "other",
    "make",
    "use",
    "try",
    "keep",
    "check",
    "start",
    "change",
    "need",
    "know",
    "think",
)

_QUESTION_STARTS = (
    "How do I",
    "What is the best way to handle",
    "Can you explain",
    "Why does my",
    "Any tips on",
    "Help me plan",
    "Compare two approaches to",
    "Summarise what you know about",
    "I'm stuck with",
    "Quick question about",
)


class TextMaker:
    """Plausible chat text (questions, answers, tool output) from a seeded generator.

    Words come from a topic's vocabulary plus filler, with a little non-ASCII text, so
    that searching for a topic word finds a realistic fraction of the threads.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _sentence(self, keywords: Sequence[str], words: int) -> str:
        rng = self.rng
        out = [
            rng.choice(keywords) if rng.random() < 0.18 else rng.choice(_FILLER)
            for _ in range(words)
        ]
        out[0] = out[0][:1].upper() + out[0][1:]
        return " ".join(out) + rng.choice((".", ".", ".", "!", "?"))

    def question(self, topic: str, keywords: Sequence[str]) -> str:
        rng = self.rng
        head = f"{rng.choice(_QUESTION_STARTS)} {topic}"
        if rng.random() < 0.5:
            head += f" and {rng.choice(keywords)}"
        extra = "" if rng.random() < 0.4 else " " + self._sentence(keywords, rng.randint(6, 30))
        return head + "?" + extra

    def follow_up(self, keywords: Sequence[str]) -> str:
        return self._sentence(keywords, self.rng.randint(4, 40))

    def answer(self, keywords: Sequence[str]) -> str:
        rng = self.rng
        paragraphs = []
        for _ in range(rng.randint(1, 4)):
            sentences = [
                self._sentence(keywords, rng.randint(6, 22)) for _ in range(rng.randint(2, 6))
            ]
            paragraphs.append(" ".join(sentences))
        if rng.random() < 0.3:
            paragraphs.append("\n".join(f"- {rng.choice(keywords)}" for _ in range(3)))
        return "\n\n".join(paragraphs)

    def tool_output(self, keywords: Sequence[str]) -> str:
        rng = self.rng
        hits = [
            f'{{"title": "{rng.choice(keywords)} notes", "score": {rng.random():.3f}}}'
            for _ in range(rng.randint(1, 3))
        ]
        return "[" + ", ".join(hits) + "]"


# -- time and ids -------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


class Clock:
    """Timestamps for the generated calls.

    ``Clock()`` follows the real time, as a live server does; ``Clock(start)`` is a
    simulated clock that only moves when told to, for archives spread over months.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._simulated = start
        self._last = ""

    def now(self) -> str:
        if self._simulated is not None:
            value = format_time(self._simulated)
            self._simulated += timedelta(microseconds=1000)
        else:
            value = format_time(datetime.now(timezone.utc))
        if value <= self._last:  # the same microsecond twice: keep them ordered
            moment = datetime.strptime(self._last, TIME_FORMAT).replace(tzinfo=timezone.utc)
            value = format_time(moment + timedelta(microseconds=1))
        self._last = value
        return value

    def advance(self, seconds: float) -> None:
        if self._simulated is not None:
            self._simulated += timedelta(seconds=seconds)


def new_id(rng: random.Random) -> str:
    """A UUID4 string drawn from ``rng`` (Chainlit's ids are UUID4s)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# -- calls --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRef:
    """A user's persisted id, known only once ``create_user`` has run on a layer."""

    identifier: str


@dataclass
class Call:
    """One awaited data-layer call: ``await getattr(layer, method)(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    thread_id: str | None = None
    at: str = ""
    """When a live server would have made it (orders calls of concurrent chats)."""

    @property
    def is_write(self) -> bool:
        return self.method not in ("get_user", "get_thread", "list_threads", "get_thread_author")


@dataclass
class Conversation:
    """One generated thread: who, about what, and every call that writes it."""

    thread_id: str
    identifier: str
    name: str
    topic: str
    keywords: tuple[str, ...]
    calls: list[Call]
    turns: int
    feedback_values: list[int]


def _message(
    step_id: str,
    thread_id: str,
    parent_id: str | None,
    kind: str,
    author: str,
    output: str,
    at: str,
) -> dict[str, Any]:
    """``Message.to_dict()`` as Chainlit 2.12 builds it."""
    return {
        "id": step_id,
        "threadId": thread_id,
        "parentId": parent_id,
        "createdAt": at,
        "command": None,
        "modes": None,
        "start": at,
        "end": at,
        "output": output,
        "name": author,
        "type": kind,
        "language": None,
        "streaming": False,
        "isError": False,
        "waitForAnswer": False,
        "metadata": {},
        "tags": None,
    }


def _step(
    step_id: str,
    thread_id: str,
    parent_id: str | None,
    kind: str,
    name: str,
    at: str,
    *,
    input: str = "",
    output: str = "",
    end: str | None = None,
) -> dict[str, Any]:
    """``Step.to_dict()`` as Chainlit 2.12 builds it."""
    return {
        "name": name,
        "type": kind,
        "id": step_id,
        "threadId": thread_id,
        "parentId": parent_id,
        "streaming": False,
        "metadata": {},
        "tags": None,
        "input": input,
        "isError": False,
        "output": output,
        "createdAt": at,
        "start": at,
        "end": end,
        "language": "json" if kind == "tool" else None,
        "defaultOpen": False,
        "autoCollapse": False,
        "showInput": "json",
        "generation": None,
    }


def turn_calls(
    rng: random.Random,
    clock: Clock,
    text: TextMaker,
    thread_id: str,
    question: str,
    keywords: Sequence[str],
    *,
    feedback: int | None,
) -> list[Call]:
    """The calls of one chat turn, in the order Chainlit makes them."""
    user_id, run_id, tool_id, answer_id = (new_id(rng) for _ in range(4))
    calls: list[Call] = []

    def add(method: str, *args: Any, at: str, **kwargs: Any) -> None:
        calls.append(Call(method, args, kwargs, thread_id=thread_id, at=at))

    t = clock.now()
    add(
        "create_step", _message(user_id, thread_id, None, "user_message", "User", question, t), at=t
    )
    run_start = clock.now()
    add(
        "create_step",
        _step(run_id, thread_id, user_id, "run", "on_message", run_start),
        at=run_start,
    )
    t = clock.now()
    tool_input = f'{{"query": "{rng.choice(keywords)}"}}'
    add(
        "create_step",
        _step(tool_id, thread_id, run_id, "tool", "search", t, input=tool_input),
        at=t,
    )
    clock.advance(rng.uniform(0.2, 1.5))
    end = clock.now()
    add(
        "update_step",
        _step(
            tool_id,
            thread_id,
            run_id,
            "tool",
            "search",
            t,
            input=tool_input,
            output=text.tool_output(keywords),
            end=end,
        ),
        at=end,
    )
    t = clock.now()
    add(
        "create_step",
        _message(answer_id, thread_id, run_id, "assistant_message", "Assistant", "", t),
        at=t,
    )
    clock.advance(rng.uniform(1.0, 8.0))
    final = text.answer(keywords)
    done = clock.now()
    add(
        "update_step",
        _message(answer_id, thread_id, run_id, "assistant_message", "Assistant", final, t),
        at=done,
    )
    end = clock.now()
    add(
        "update_step",
        _step(run_id, thread_id, user_id, "run", "on_message", run_start, end=end),
        at=end,
    )
    if feedback is not None:
        clock.advance(rng.uniform(2.0, 30.0))
        t = clock.now()
        fb = {
            "id": new_id(rng),
            "forId": run_id,
            "threadId": thread_id,
            "value": feedback,
            "comment": rng.choice((None, None, "thanks", "not what I asked", "great answer")),
        }
        add("upsert_feedback", fb, at=t)
    return calls


def conversation(
    rng: random.Random,
    clock: Clock,
    identifier: str,
    *,
    turns: int,
    feedback_rate: float = 0.15,
    thread_id: str | None = None,
) -> Conversation:
    """A whole thread: turns, the first-message ``update_thread`` and the metadata one."""
    text = TextMaker(rng)
    topic, keywords = rng.choice(TOPICS)
    thread_id = thread_id or new_id(rng)
    calls: list[Call] = []
    feedback_values: list[int] = []
    name = ""
    for n in range(turns):
        question = text.question(topic, keywords) if n == 0 else text.follow_up(keywords)
        value = None
        if rng.random() < feedback_rate:
            value = 1 if rng.random() < 0.7 else 0
            feedback_values.append(value)
        if n == 0:
            # Chainlit names the thread after the first message, as soon as it arrives.
            name = question[:120]
            at = clock.now()
            calls.append(
                Call(
                    "update_thread",
                    (thread_id,),
                    {"name": name, "user_id": UserRef(identifier), "tags": None},
                    thread_id=thread_id,
                    at=at,
                )
            )
        calls.extend(turn_calls(rng, clock, text, thread_id, question, keywords, feedback=value))
        clock.advance(rng.uniform(10.0, 300.0))
    at = clock.now()
    metadata = {
        "chat_profile": rng.choice(("default", "default", "research")),
        "chat_settings": {"model": rng.choice(("small", "large")), "temperature": 0.7},
        "client_type": "webapp",
        "language": rng.choice(("en-US", "en-GB", "fr-FR", "de-DE")),
    }
    calls.append(
        Call("update_thread", (thread_id,), {"metadata": metadata}, thread_id=thread_id, at=at)
    )
    return Conversation(
        thread_id=thread_id,
        identifier=identifier,
        name=name,
        topic=topic,
        keywords=tuple(keywords),
        calls=calls,
        turns=turns,
        feedback_values=feedback_values,
    )


def user_identifiers(count: int) -> list[str]:
    """Login identifiers of ``count`` users (e-mail addresses, one with non-ASCII)."""
    first = ("alice", "bob", "chloé", "dmitri", "eve", "farah", "gustavo", "hana", "ivan", "jun")
    return [f"{first[i % len(first)]}{i // len(first) or ''}@example.com" for i in range(count)]


def owner_weights(count: int) -> list[float]:
    """How threads are spread over users: a Zipf-like skew, the first user the heaviest
    (about a fifth of all threads when there are many users)."""
    return [1.0 / (i + 1) ** 0.9 for i in range(count)]


def users_for(threads: int) -> int:
    """How many users an archive of ``threads`` threads has (at least 5)."""
    return max(5, threads // 1000)


def archive_conversations(
    threads: int,
    *,
    seed: int = 1,
    users: int | None = None,
    start: datetime | None = None,
    span_days: float = 730.0,
    turns: tuple[int, int] = (1, 5),
    feedback_rate: float = 0.15,
    even: bool = False,
) -> Iterator[Conversation]:
    """``threads`` conversations of several users spread over ``span_days`` days, each
    with its own simulated clock, yielded in the order they started. Users own threads
    with a Zipf-like skew, or (``even``) as many each."""
    rng = random.Random(seed)
    people = user_identifiers(users if users is not None else users_for(threads))
    weights = owner_weights(len(people))
    start = start or datetime(2024, 1, 1, tzinfo=timezone.utc)
    gap = span_days * 86400.0 / max(threads, 1)
    moment = start
    for n in range(threads):
        moment += timedelta(seconds=rng.expovariate(1.0 / gap))
        identifier = people[n % len(people)] if even else rng.choices(people, weights)[0]
        yield conversation(
            rng,
            Clock(moment),
            identifier,
            turns=rng.randint(*turns),
            feedback_rate=feedback_rate,
        )


def interleaved(conversations: Iterable[Conversation]) -> Iterator[Call]:
    """The calls of overlapping conversations in the order a server receives them.

    ``conversations`` must come in the order they start (as :func:`archive_conversations`
    yields them); only the conversations still running are held, so a 100k-thread
    archive streams through in little memory.
    """
    source = iter(conversations)
    pending = next(source, None)
    heap: list[tuple[str, int, Call, Iterator[Call]]] = []
    seq = 0
    while heap or pending is not None:
        while pending is not None and (not heap or pending.calls[0].at <= heap[0][0]):
            calls = iter(pending.calls)
            first = next(calls)
            heapq.heappush(heap, (first.at, seq, first, calls))
            seq += 1
            pending = next(source, None)
        _, _, call, calls = heapq.heappop(heap)
        yield call
        following = next(calls, None)
        if following is not None:
            heapq.heappush(heap, (following.at, seq, following, calls))
            seq += 1


# -- replaying against a layer ------------------------------------------------------------

Ack = Callable[[Call, Any], None]


async def ensure_users(layer: Any, identifiers: Iterable[str]) -> dict[str, str]:
    """Log every user in once (``create_user``), as Chainlit does at login."""
    from chainlit.user import User

    ids: dict[str, str] = {}
    for identifier in identifiers:
        user = await layer.create_user(User(identifier=identifier, metadata={"provider": "bench"}))
        ids[identifier] = user.id
    return ids


def _resolve(value: Any, user_ids: dict[str, str]) -> Any:
    if isinstance(value, UserRef):
        return user_ids[value.identifier]
    return value


async def perform(layer: Any, call: Call, user_ids: dict[str, str]) -> Any:
    """Make one call on ``layer`` (a ``BaseDataLayer``) and return its result."""
    args = [_resolve(a, user_ids) for a in call.args]
    kwargs = {k: _resolve(v, user_ids) for k, v in call.kwargs.items()}
    if call.method in ("create_step", "update_step"):
        args[0] = dict(args[0])  # layers may mutate the dict (SQLAlchemy does)
    if call.method == "upsert_feedback":
        from chainlit.types import Feedback

        args[0] = Feedback(**args[0])
    method: Callable[..., Awaitable[Any]] = getattr(layer, call.method)
    return await method(*args, **kwargs)


async def replay(
    layer: Any,
    calls: Iterable[Call],
    user_ids: dict[str, str],
    on_ack: Ack | None = None,
) -> int:
    """Await each call in turn; ``on_ack(call, result)`` runs once the layer returned
    (the write is acknowledged). Returns the number of calls made."""
    count = 0
    for call in calls:
        result = await perform(layer, call, user_ids)
        count += 1
        if on_ack is not None:
            on_ack(call, result)
    return count


def final_steps(calls: Iterable[Call]) -> dict[str, dict[str, Any]]:
    """What every step should hold once all ``calls`` landed (later non-empty fields win,
    an empty output never overwrites text): the expected state for checks."""
    steps: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call.method not in ("create_step", "update_step"):
            continue
        incoming = call.args[0]
        stored = steps.setdefault(incoming["id"], {})
        for key, value in incoming.items():
            if value is None or ((value == "" or value == {}) and stored.get(key)):
                continue
            stored[key] = value
    return steps
