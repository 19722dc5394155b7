"""The synthesis engine: trace checks, the scheduler's determinism, and the stage in-process against
the fake teacher for what the subprocess tests do not cover (Figure 5 rewriting, refused requests, an
unusable teacher, a reasoning model's separate chain of thought, answer leaks)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stratos.api.spec import TaskSpec
from stratos.contracts.stage_io import StageError
from stratos.contracts.synthesize import SynthesizeConfig
from stratos.llm.client import ChatResult, TeacherUnavailable
from stratos.synthesis import engine as eng
from stratos.synthesis.prompts import question_key
from stratos.synthesis.sources import mutate_candidate, select_real, synthetic_id
from stratos.tasks import build_task
from stratos.tasks.mahjong import MahjongTask
from stratos.tasks.mahjong_gen import mutate_hand
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer, format_tiles, parse_tiles
from stratos.workloads.synthesize import synthesize
from support.fake_openai import FakeOpenAI

MAHJONG = {"builtin": "mahjong", "seed": 0, "trainSize": 30, "testSize": 10}


def chat(text: str, reasoning: str | None = None, finish: str = "stop") -> ChatResult:
    return ChatResult(
        text=text, prompt_tokens=3, completion_tokens=2, finish_reason=finish, attempts=1, reasoning=reasoning
    )


def hand_of(messages: list[dict[str, Any]]) -> list[int]:
    line = next(ln for ln in messages[-1]["content"].splitlines() if ln.startswith("Hand:"))
    return parse_tiles(line)


def wrong(answer: str) -> str:
    return "🀀" if answer != "🀀" else "🀁"


def good_hand(tiles: list[int]) -> bool:
    """The stub teacher's competence: a fixed two thirds of hands, by hash."""
    key = ",".join(map(str, sorted(tiles)))
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 3 != 0


class Stub:
    """A Caller stand-in with random latency: answers Mahjong prompts right exactly on good hands."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.requests = 0

    async def ask(self, messages, tally, *, temperature, seed):
        self.requests += 1
        tally.requests += 1
        await asyncio.sleep(self.rng.random() * 0.004)
        tiles = hand_of(messages)
        truth = canonical_answer(winning_tiles(tiles))
        return chat(f"Step 1: group the tiles.\nThe answer is {truth if good_hand(tiles) else wrong(truth)}")


def make_engine(task, caller, **overrides) -> tuple[eng.Engine, list[eng.Decision]]:
    decisions: list[eng.Decision] = []
    real = select_real(task.load("train"), limit=8, seed=0)
    kwargs: dict[str, Any] = dict(
        task=task,
        strategy="alignment",
        mode="mutate",
        teacher=caller,
        verifier=caller,
        seeds=real,
        known_keys={question_key(s) for s in (*task.load("train"), *task.load("test"))},
        decided=(),
        kept=lambda: sum(d.kept for d in decisions),
        target=20,
        max_candidates=200,
        attempts=1,
        temperature=0.7,
        verifier_temperature=0.0,
        seed=0,
        window=4,
    )
    kwargs.update(overrides)
    return eng.Engine(**kwargs), decisions


def test_judge_names_the_reason():
    task = MahjongTask(seed=0, train_size=5, test_size=2)
    sample = task.load("train")[0]
    e, _ = make_engine(task, None)
    assert e.judge(chat(f"Step.\nThe answer is {sample.answer}"), sample) is None
    assert e.judge(chat(f"Step.\nThe answer is {wrong(sample.answer)}"), sample) == eng.ANSWER_MISMATCH
    assert e.judge(chat("I cannot tell."), sample) == eng.NO_ANSWER
    assert e.judge(chat("Let me think about the", finish="length"), sample) == eng.TRUNCATED
    assert e.judge(chat(f"The answer is {sample.answer}"), sample) == eng.NO_REASONING
    leaky = f"Working back from the given answer.\nThe answer is {sample.answer}"
    assert e.judge(chat(leaky), sample) is None  # alignment: forward traces are not checked for leaks
    e.reverse = True
    assert e.judge(chat(leaky), sample) == eng.LEAK


def expected_walk(task, target: int) -> tuple[list[str], Counter[str]]:
    """The decisions the scheduler's rule implies, walked one at a time."""
    real = select_real(task.load("train"), limit=8, seed=0)
    decided = [s.id for s in real]
    rejected: Counter[str] = Counter()
    kept = 0
    for s in real:
        if good_hand(s.meta["tiles"]):
            kept += 1
        else:
            rejected[eng.ANSWER_MISMATCH] += 1
    seen = {question_key(s) for s in (*task.load("train"), *task.load("test"))}
    index = 0
    while kept < target:
        cand = mutate_candidate(task, real, seed=0, index=index)
        index += 1
        decided.append(cand.id)
        if question_key(cand) in seen:
            rejected[eng.DUPLICATE] += 1
            continue
        seen.add(question_key(cand))
        if good_hand(cand.meta["tiles"]):
            kept += 1
        else:
            rejected[eng.ANSWER_MISMATCH] += 1
    return sorted(decided), rejected


@pytest.mark.parametrize("window, rng_seed", [(1, 0), (3, 1), (16, 2), (16, 3)])
def test_scheduler_decides_the_same_items_whatever_the_timing(window, rng_seed):
    task = MahjongTask(seed=0, train_size=30, test_size=10)
    stub = Stub(random.Random(rng_seed))
    e, decisions = make_engine(task, stub, window=window)
    real = select_real(task.load("train"), limit=8, seed=0)
    asyncio.run(e.run(real, decisions.append))
    ids, rejected = expected_walk(task, 20)
    assert sorted(d.id for d in decisions) == ids
    assert Counter(d.reason for d in decisions if not d.kept) == rejected
    assert sum(d.kept for d in decisions) == 20
    assert stub.requests == len(ids) - rejected[eng.DUPLICATE]


def test_scheduler_stops_at_the_candidate_cap():
    task = MahjongTask(seed=0, train_size=30, test_size=10)
    e, decisions = make_engine(task, Stub(random.Random(0)), target=1000, max_candidates=15)
    asyncio.run(e.run([], decisions.append))
    assert sorted(d.id for d in decisions) == [synthetic_id(i) for i in range(15)]


def test_a_failing_teacher_ends_the_run_and_cancels_the_rest():
    task = MahjongTask(seed=0, train_size=30, test_size=10)

    class Failing(Stub):
        async def ask(self, messages, tally, *, temperature, seed):
            if self.requests == 5:
                raise TeacherUnavailable("teacher t: authentication failed")
            return await super().ask(messages, tally, temperature=temperature, seed=seed)

    stub = Failing(random.Random(0))
    e, decisions = make_engine(task, stub, window=4)
    with pytest.raises(TeacherUnavailable):
        asyncio.run(e.run(select_real(task.load("train"), limit=8, seed=0), decisions.append))
    assert len(decisions) <= 5


# ------------------------------------------------------------------------- in-process stage runs


def config(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> SynthesizeConfig:
    return SynthesizeConfig.model_validate(
        {
            "strategy": "injection",
            "teacher": {
                "baseURL": fake.base_url,
                "model": fake.model,
                "maxConcurrency": 3,
                "maxRetries": 0,
                "costPerMillionTokens": 1.0,
            },
            "task": MAHJONG,
            "outputDir": str(tmp_path / "out"),
            "attempts": 1,
            **extra,
        }
    )


def figure5_reply(messages: list[dict], body: dict) -> str | None:
    """A teacher following the paper's Figure 5 prompt: rewrite the hand, state its winning tiles.

    By the request's seed: 1 in 5 replies names no hand, 1 in 5 states a wrong answer."""
    if "modify the hand by replacing" not in messages[-1]["content"]:
        return None
    seed = body["seed"]
    if seed % 5 == 0:
        return "I would change the pair.\nThe answer is 🀇"
    new, answer = mutate_hand(hand_of(messages), random.Random(seed))
    stated = wrong(answer) if seed % 5 == 1 else answer
    return (
        f"New hand: {format_tiles(new)}\nStep 1: group the new hand by suit.\n"
        f"Step 2: try each candidate.\nThe answer is {stated}"
    )


def test_figure5_rewriting_is_checked_by_the_solver(tmp_path):
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=6, seed=0)
    # what the program must decide, candidate by candidate
    seen = {question_key(s) for s in (*task.load("train"), *task.load("test"))}
    expected: Counter[str] = Counter()
    kept, index = 0, 0
    while kept < 8:
        seed = eng.request_seed(0, synthetic_id(index), "write", 0)
        seed_hand = real[index % len(real)].meta["tiles"]
        index += 1
        if seed % 5 == 0:
            expected[eng.MALFORMED] += 1
            continue
        new, _ = mutate_hand(seed_hand, random.Random(seed))
        key = "tiles:" + ",".join(map(str, sorted(new)))
        if key in seen:
            expected[eng.DUPLICATE] += 1
            continue
        seen.add(key)
        if seed % 5 == 1:
            expected[eng.VERIFIER_DISAGREES] += 1
        else:
            kept += 1

    with FakeOpenAI(samples=real, model="t", reply=figure5_reply) as fake:
        result = asyncio.run(
            synthesize(config(tmp_path, fake, maxRealSamples=6, targetSamples=14, augment="teacher"))
        )
        assert len(fake.chat_requests) == 6 + index
    assert result["augment"] == "rewrite"
    assert (result["kept"], result["real"], result["synthetic"]) == (14, 6, 8)
    assert result["rejected"] == dict(expected)
    rows = [json.loads(ln) for ln in Path(result["datasetPath"]).read_text().splitlines()]
    for row in rows:
        if row["source"] == "synthetic":
            tiles = parse_tiles(row["messages"][1]["content"].split("\n", 1)[0])
            assert row["answer"] == canonical_answer(winning_tiles(tiles))
            assert row["messages"][2]["content"].startswith("Step 1: group the new hand by suit.")
            assert "New hand" not in row["messages"][2]["content"]


def test_refused_requests_are_rejections_and_all_refused_is_unavailable(tmp_path):
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=4, seed=0)
    with FakeOpenAI(samples=real, model="t", always_fail_status=400) as fake:
        cfg = config(tmp_path, fake, maxRealSamples=4, targetSamples=4, attempts=2, augment="none")
        with pytest.raises(TeacherUnavailable, match="every request was refused"):
            asyncio.run(synthesize(cfg))
        assert len(fake.chat_requests) == 8
        state = (tmp_path / "out" / "synthesize" / "state.jsonl").read_text()
        assert state.count('"reason": "teacher error"') == 4
        # With synthetic candidates to try as well, the run stops once 16 requests were all refused
        # instead of working through all 4 * 4 candidates.
        fake.reset()
        cfg = config(tmp_path / "2", fake, maxRealSamples=4, targetSamples=4, attempts=2)
        with pytest.raises(TeacherUnavailable, match=r"first 1[6-9] requests was refused"):
            asyncio.run(synthesize(cfg))
        assert 16 <= len(fake.chat_requests) < 16 + 2 * 6


def test_an_unusable_teacher_fails_the_stage(tmp_path):
    with (
        FakeOpenAI(model="t", require_key="sk-right") as fake,
        pytest.raises(TeacherUnavailable, match="authentication failed"),
    ):
        asyncio.run(synthesize(config(tmp_path, fake, maxRealSamples=4, targetSamples=4)))


def test_reasoning_model_chain_of_thought_becomes_the_target(tmp_path):
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=3, seed=0)
    with FakeOpenAI(samples=real, model="r1", reasoning_field="reasoning_content") as fake:
        result = asyncio.run(
            synthesize(
                config(
                    tmp_path, fake, strategy="alignment", maxRealSamples=3, targetSamples=3, augment="none"
                )
            )
        )
    assert (result["kept"], result["rejected"]) == (3, {})
    for line in Path(result["datasetPath"]).read_text().splitlines():
        content = json.loads(line)["messages"][2]["content"]
        assert content.startswith("Let me think step by step.\nFirst I group the tiles")
        assert re.search(r"\n\nThe answer is .+\.$", content)


def test_reverse_traces_that_admit_the_answer_was_given_are_rejected(tmp_path):
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=4, seed=0)

    def render(sample, answer):
        return f"Working back from the given answer, the hand splits nicely.\nThe answer is {answer}"

    cfg = {"maxRealSamples": 4, "targetSamples": 4, "augment": "none"}
    with (
        FakeOpenAI(samples=real, model="t", render=render) as fake,
        pytest.raises(StageError, match=r"no example survived verification \(mentions the given answer 4\)"),
    ):
        asyncio.run(synthesize(config(tmp_path, fake, **cfg)))


# ------------------------------------------------------------------------------- the spend cap


def test_the_spend_cap_reserves_worst_cases_waits_for_requests_in_flight_and_keeps_what_returns() -> None:
    async def scenario() -> None:
        cap = eng.SpendCap(1.0, spent=0.25)
        await cap.reserve(0.5)
        await cap.reserve(0.25)  # 0.25 + 0.5 + 0.25 = 1.0: full
        third = asyncio.create_task(cap.reserve(0.2))
        await asyncio.sleep(0.01)
        assert not third.done()  # waits for room, nothing over the cap is held
        cap.settle(0.5, 0.1)  # returned having used 0.1 of its 0.5: 0.35 spent, 0.25 held
        await asyncio.wait_for(third, 5)
        assert (round(cap.spent, 9), round(cap.reserved, 9)) == (0.35, 0.45)
        cap.settle(0.25, 0.0)  # failed: nothing used
        cap.settle(0.2, 0.2)
        assert (round(cap.spent, 9), cap.reserved, cap.exhausted) == (0.55, 0.0, False)
        with pytest.raises(eng.BudgetReached):  # does not fit, and nothing in flight will make room
            await cap.reserve(0.5)
        await cap.reserve(0.45)
        cap.settle(0.45, 0.45)
        assert cap.exhausted

    asyncio.run(scenario())


class PricedClient:
    """A teacher client stand-in with a price and random latency; every answer costs 100 + 50 tokens."""

    name = "priced"
    cost_per_million_tokens = 100.0  # 0.015 USD per answer; reserved: 1e-4 x (prompt bytes + 8 + 200)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.started = self.finished = 0
        self.in_flight = self.most_in_flight = 0

    async def chat(self, messages, *, max_tokens, temperature, seed):
        self.started += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(self.rng.random() * 0.004)
        self.in_flight -= 1
        self.finished += 1
        tiles = hand_of(messages)
        truth = canonical_answer(winning_tiles(tiles))
        answer = truth if good_hand(tiles) else wrong(truth)
        return ChatResult(
            text=f"Step 1: group the tiles.\nThe answer is {answer}",
            prompt_tokens=100,
            completion_tokens=50,
            finish_reason="stop",
            attempts=1,
        )


@pytest.mark.parametrize("limit", [0.5, 1.0, 3.7])
def test_requests_in_flight_never_take_the_stage_past_its_cap_and_all_of_them_finish(limit: float) -> None:
    """Issue 15, defect 10 (second round): the cap covers the requests in flight. Each reserves its worst
    case before it is sent; once one cannot be covered nothing new starts, those in flight finish and are
    handed on, and what was spent (the sum of the decisions' costs) stays within the cap."""
    task = MahjongTask(seed=0, train_size=30, test_size=10)
    client = PricedClient(random.Random(7))
    cap = eng.SpendCap(limit)
    caller = eng.Caller(client, max_tokens=200, cap=cap)  # type: ignore[arg-type]
    e, decisions = make_engine(task, caller, window=6, target=1000, max_candidates=1000)
    with pytest.raises(eng.BudgetReached):
        asyncio.run(e.run(select_real(task.load("train"), limit=8, seed=0), decisions.append))
    spent = sum(d.tally.cost_usd for d in decisions)
    assert client.started == client.finished > 0  # none cancelled
    assert client.most_in_flight > 1  # several fit under the cap at once (worst case ~0.1 USD each)
    assert abs(spent - cap.spent) < 1e-9 and spent <= limit and cap.reserved == 0.0
    # It stopped when a request did not fit with none in flight, not before: what is left is less than
    # the largest worst case a prompt of this task can have.
    assert limit - spent < caller.worst_case_usd([{"role": "user", "content": "x" * 4000}] * 2)
    assert sum(d.tally.requests for d in decisions) == client.started


def test_the_spend_ledger_and_a_recount_of_the_same_requests_agree_exactly(tmp_path: Path) -> None:
    """A retried run reports max(spend ledger, state ledger): the running total and the recount must be
    the same float, whatever order the responses came in, or the retry reports a last-digit change."""
    from stratos.synthesis.spend import SpendLedger, read_spend
    from stratos.synthesis.store import Totals

    tokens = [137, 55, 201, 88, 19, 144, 73, 310]
    parts = [t * 2.0 / 1e6 for t in tokens]
    assert sum(parts) != 0.002054  # the naive running sum is off in the last digit: the case at hand
    for order in (parts, parts[::-1], sorted(parts)):
        ledger = SpendLedger(tmp_path / str(id(order)))
        for usd in order:
            ledger.add(1, 1, usd)
        totals = Totals(costs=list(order))
        assert ledger.spent.cost_usd == totals.cost_usd == 0.002054
        assert read_spend(ledger.path).cost_usd == 0.002054
