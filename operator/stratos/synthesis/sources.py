"""Where the questions come from: the real ones used, and synthetic candidates made from them.

Everything here is deterministic in (seed, index), so a restarted Job, and a test, can recompute the
exact candidate a given index stands for without asking anyone.

Tasks with a solver (Mahjong) get two augmentations: the program's own mutation (`mutate_hand`: one
meld or the pair replaced, the answer from the solver; correct by construction) and the paper's
Figure 5 prompt, where the teacher rewrites the hand and the solver checks the teacher's answer.
Tasks without one get new questions written by the teacher (see `prompts.generation_messages`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from stratos.tasks import Sample, Task
from stratos.tasks.base import Message
from stratos.tasks.mahjong import MahjongTask, parse_new_hand, question
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer

_NEW_HAND_LINE = re.compile(r"new\s+(?:13-tile\s+)?hand", re.IGNORECASE)


def select_real(train: Sequence[Sample], *, limit: int, seed: int) -> list[Sample]:
    """``limit`` training samples chosen by ``seed``, in split order (all of them when there are fewer).

    The choice is a prefix of one seeded ranking, so a larger limit (a resumed Job whose target grew)
    keeps every question a smaller one chose.
    """
    if limit >= len(train):
        return list(train)
    ranking = list(range(len(train)))
    random.Random(f"stratos-synthesize-real:{seed}").shuffle(ranking)
    return [train[i] for i in sorted(ranking[: max(0, limit)])]


def synthetic_id(index: int) -> str:
    return f"synthetic-{index:06d}"


def seed_of(seeds: Sequence[Sample], index: int) -> Sample:
    """The seed example of synthetic candidate ``index``: round robin over the real questions."""
    return seeds[index % len(seeds)]


def has_mutator(task: Task) -> bool:
    return callable(getattr(task, "mutate", None))


def mutate_candidate(task: Task, seeds: Sequence[Sample], *, seed: int, index: int) -> Sample:
    """Synthetic candidate ``index``: its seed example edited by the task's mutator."""
    rng = random.Random(f"stratos-synthesize-mutate:{seed}:{index}")
    mutate = task.mutate  # type: ignore[attr-defined]
    sample: Sample = mutate(seed_of(seeds, index), rng, sample_id=synthetic_id(index))
    return sample


def solver_answer(task: Task, sample: Sample) -> str | None:
    """The answer the task's own solver gives, independently of how the sample was made; None when
    the task has no solver (then a second teacher call is the verifier)."""
    if isinstance(task, MahjongTask):
        tiles = sample.meta.get("tiles")
        if not isinstance(tiles, list | tuple) or len(tiles) != 13:
            return None
        waits = winning_tiles([int(t) for t in tiles])
        return canonical_answer(waits) if waits else None
    return None


def has_rewriter(task: Task) -> bool:
    """Whether the task has the paper's Figure 5 prompt (a teacher rewrites a seed, a solver checks)."""
    return isinstance(task, MahjongTask)


def rewrite_messages(task: Task, seed: Sample) -> list[Message]:
    assert isinstance(task, MahjongTask)
    return task.augment_messages(seed)


def parse_rewrite(text: str, *, sample_id: str, seed: Sample) -> tuple[Sample, str] | None:
    """(new sample with the solver's answer, the teacher's reasoning about it) from a Figure 5 reply;
    None when the reply names no valid new 13-tile hand."""
    tiles = parse_new_hand(text)
    if tiles is None:
        return None
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if _NEW_HAND_LINE.search(line)), -1)
    body = "\n".join(lines[at + 1 :]).strip()
    sample = Sample(
        id=sample_id,
        question=question(tiles),
        answer=canonical_answer(winning_tiles(tiles)),
        meta={"tiles": list(tiles), "source": f"rewritten:{seed.id}"},
    )
    return sample, body
