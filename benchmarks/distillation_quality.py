"""Distillation quality by the paper's Table 5 method: what curated data adds, at equal compute.

The paper (Table 5, Mahjong, 3B student) trains on the original data (real hands with the teacher's
reverse-reasoning rationales) and on curated data (the original plus verified synthetic hands made by
replacing a meld or the pair, Figure 5): 7.69% -> 17.31%. This script rebuilds that comparison with the
project's own parts and a student small enough for a CPU, and reports what it gets.

Arms (every trained arm gets the same compute: the same number of training tokens, prompt and
completion, so an arm whose rows are longer sees fewer of them):

- ``zero-shot``: the untrained student (it decodes at most 64 tokens: a random model writes no end-of-turn
  token and would always fill the trained arms' 512);
- ``original``: the real training hands (4,260 by default, the size of the paper's dataset) with
  ``+rationale`` the teacher's reverse reasoning before the answer line, without it the answer line only;
- ``curated``: the original plus N synthetic hands (``stratos.tasks.mahjong.MahjongTask.mutate``: one
  meld or the pair of a real hand replaced; the winning tiles from the exact solver, so every synthetic
  hand is verified), again with and without rationales.

The teacher is the programmatic Mahjong teacher of ``stratos run`` (``stratos.local.teacher``): given a
hand and its known answer it writes the meld decomposition behind it (the rationale); asked the question
alone it solves a fixed 10% of hands. Its own accuracy on the held-out hands is measured beside the
students'.

The student is ``stratos.training.tiny`` with the Mahjong-fitted tokenizer (a token per tile and per fixed
phrase), Llama architecture, ~0.8M parameters, random initialisation (the seed changes it); trained with
the train stage's code (``stratos.workloads.train``: trl SFTTrainer, LoRA on every linear layer, rank =
width, loss on the completion only) and evaluated with the evaluate stage's code
(``stratos.workloads.evaluate``: the task's prompts, greedy decoding, exact-set verification) on the same
held-out hands (1,000 by default) for every arm and seed.

Intervals. Per arm: the mean over seeds, a 95% interval from a bootstrap that resamples seeds and held-out
hands, and the pooled Wilson interval of all answers. Differences between arms: paired (same seeds, same
hands), bootstrap 95% interval.

``--tiny`` is a smoke size (minutes); ``--scale N`` multiplies width and training tokens for a GPU (bf16
where the GPU has it). Results go to ``benchmarks/results/distillation_quality.json`` only from a clean
git tree (the revision is recorded); ``--out DIR`` writes elsewhere from any tree.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cloud import machine, revision, write_json

NAME = "distillation_quality"
TASK_SEED = 7
TEACHER_ACCURACY = 0.1
ARMS = ("zero-shot", "original", "original+rationale", "curated", "curated+rationale")


@dataclass(frozen=True)
class Settings:
    seeds: int = 3
    real: int = 4260
    synthetic: int = 4000
    test: int = 1000
    #: Training tokens per trained arm (prompt and completion, before padding): equal compute.
    tokens: int = 400_000
    hidden: int = 128
    layers: int = 4
    intermediate: int = 384
    vocab: int = 336
    micro_batch: int = 32
    learning_rate: float = 3e-3
    max_new_tokens: int = 512
    #: The untrained student writes no end-of-turn token: it would always fill max_new_tokens.
    zero_shot_new_tokens: int = 64
    eval_batch: int = 250
    workers: int = 2
    threads: int = 1
    arms: tuple[str, ...] = ARMS

    def scaled(self, factor: int) -> Settings:
        """Wider and deeper student, more tokens: the size for a GPU."""
        return replace(
            self,
            hidden=self.hidden * factor,
            intermediate=self.intermediate * factor,
            layers=self.layers * 2,
            tokens=self.tokens * factor * factor,
            learning_rate=self.learning_rate / factor,
        )


TINY = Settings(seeds=2, real=32, synthetic=32, test=16, tokens=20_000, max_new_tokens=400, eval_batch=16)


@dataclass
class ArmResult:
    arm: str
    seed: int
    correct: list[bool]
    rows: int = 0
    steps: int = 0
    tokens_per_row: float = 0.0
    train_loss: Any = None
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)


# --------------------------------------------------------------------------------------------- data


def task_spec(s: Settings) -> dict[str, Any]:
    return {"builtin": "mahjong", "seed": TASK_SEED, "trainSize": s.real, "testSize": s.test}


def rationale(sample: Any, task: Any) -> str:
    """The programmatic teacher's reply to the reverse-reasoning request for ``sample``."""
    from stratos.local.teacher import answer

    return answer(task.reverse_messages(sample)[1]["content"], accuracy=TEACHER_ACCURACY)


def synthetic_hands(task: Any, n: int, seed: int) -> list[Any]:
    """``n`` hands derived from real ones (a meld or the pair replaced), answers from the solver."""
    rng = random.Random(f"synthetic:{seed}")
    real = task.load("train")
    return [task.mutate(rng.choice(real), rng, sample_id=f"syn-{seed}-{i:05d}") for i in range(n)]


def write_rows(path: Path, task: Any, samples: Sequence[Any], *, with_rationale: bool) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for sample in samples:
            reasoning = rationale(sample, task) if with_rationale else None
            target = {"role": "assistant", "content": task.completion(sample, reasoning)}
            row = {"messages": [*task.messages(sample), target], "id": sample.id, "answer": sample.answer}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def row_tokens(path: Path, model_dir: Path) -> float:
    """Mean tokens per row (the chat-templated prompt plus the completion) under the student's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = []
    for line in path.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return statistics.fmean(lengths)


# --------------------------------------------------------------------------------------------- runs


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_student(s: Settings, seed: int, root: Path) -> Path:
    from stratos.training.tiny import TinySpec, build_tiny_model

    spec = TinySpec(
        tokenizer="mahjong",
        vocab_size=s.vocab,
        hidden_size=s.hidden,
        layers=s.layers,
        heads=4,
        kv_heads=2,
        intermediate_size=s.intermediate,
        seed=seed,
    )
    return build_tiny_model(root / f"student-{seed}", spec)


def run_arm(s: Settings, arm: str, seed: int, root: str) -> ArmResult:
    """Train (unless zero-shot) and evaluate one arm for one seed, in this process."""
    import torch

    from stratos.contracts.evaluate import EvaluateConfig
    from stratos.contracts.train import TrainConfig
    from stratos.tasks import build_task
    from stratos.workloads import evaluate, train

    torch.set_num_threads(s.threads)
    began, cpu0 = time.monotonic(), _cpu()
    work = Path(root) / f"{arm}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_student(s, seed, Path(root))
    spec = task_spec(s)
    task = build_task(spec)
    result = ArmResult(arm, seed, [])
    adapter = None
    if arm != "zero-shot":
        samples = list(task.load("train"))
        if arm.startswith("curated"):
            samples += synthetic_hands(task, s.synthetic, seed)
        data = work / "train.jsonl"
        write_rows(data, task, samples, with_rationale=arm.endswith("+rationale"))
        per_row = row_tokens(data, model_dir)
        steps = max(1, math.ceil(s.tokens / (per_row * s.micro_batch)))
        config = TrainConfig.model_validate(
            {
                "algorithm": "sft-lora",
                "modelUri": str(model_dir),
                "datasetPath": str(data),
                "outputDir": str(work / "train"),
                "lora": {"rank": s.hidden, "alpha": s.hidden, "dropout": 0.0},
                "learningRate": s.learning_rate,
                "microBatchSize": s.micro_batch,
                "sequenceLength": 1024,
                "gradientCheckpointing": False,
                "maxSteps": steps,
                "saveSteps": 10**6,
                "seed": seed,
                "epochs": 100,  # maxSteps decides; epochs only bounds it
            }
        )
        trained = train.train(config)
        adapter = trained["adapterPath"]
        result.rows, result.steps, result.tokens_per_row = len(samples), int(trained["steps"]), per_row
        result.train_loss = trained.get("trainLoss")
    evaluated = evaluate.evaluate(
        EvaluateConfig.model_validate(
            {
                "student": f"{arm}-{seed}".replace("+", "-"),
                "modelUri": str(model_dir),
                "adapterPath": adapter,
                "task": spec,
                "maxNewTokens": s.zero_shot_new_tokens if arm == "zero-shot" else s.max_new_tokens,
                "batchSize": s.eval_batch,
                "outputDir": str(work),
            }
        )
    )
    predictions = Path(evaluated["predictionsPath"]).read_text(encoding="utf-8").splitlines()
    result.correct = [bool(json.loads(line)["correct"]) for line in predictions]
    result.extra["tokensPerSecond"] = evaluated.get("tokensPerSecond")
    result.cpu_seconds = round(_cpu() - cpu0, 1)
    result.wall_seconds = round(time.monotonic() - began, 1)
    return result


def teacher_accuracy(s: Settings) -> list[bool]:
    """The programmatic teacher asked each held-out question alone (no answer given)."""
    from stratos.local.teacher import answer
    from stratos.tasks import build_task

    task = build_task(task_spec(s))
    out = []
    for sample in task.load("test"):
        reply = answer(task.messages(sample)[1]["content"], accuracy=TEACHER_ACCURACY)
        out.append(bool(task.score(reply, sample)))
    return out


# ---------------------------------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(
    per_seed: Sequence[np.ndarray], rng: np.random.Generator, draws: int = 2000
) -> tuple[float, float]:
    """95% interval of the mean accuracy, resampling seeds and, within each, held-out hands (the same
    hand indices for every seed, so paired differences stay paired)."""
    matrix = np.stack(per_seed).astype(float)  # seeds x hands
    n_seeds, n_hands = matrix.shape
    means = np.empty(draws)
    for i in range(draws):
        seeds = rng.integers(0, n_seeds, n_seeds)
        hands = rng.integers(0, n_hands, n_hands)
        means[i] = matrix[np.ix_(seeds, hands)].mean()
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def summarise(results: list[ArmResult], teacher: list[bool], seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    by_arm: dict[str, list[ArmResult]] = {}
    for r in sorted(results, key=lambda r: (r.arm, r.seed)):
        by_arm.setdefault(r.arm, []).append(r)
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = by_arm.get(arm, [])
        if not runs:
            continue
        matrix = [np.array(r.correct) for r in runs]
        correct, total = sum(sum(r.correct) for r in runs), sum(len(r.correct) for r in runs)
        arms[arm] = {
            "accuracy": correct / total,
            "ci95": bootstrap(matrix, rng),
            "wilson95": wilson(correct, total),
            "perSeed": {str(r.seed): r.accuracy for r in runs},
            "rows": runs[0].rows,
            "steps": [r.steps for r in runs],
            "tokensPerRow": round(runs[0].tokens_per_row, 1),
            "trainLoss": [r.train_loss for r in runs],
            "cpuSeconds": [r.cpu_seconds for r in runs],
        }
    diffs: dict[str, Any] = {}
    for a, b in (
        ("curated", "original"),
        ("curated+rationale", "original+rationale"),
        ("original+rationale", "original"),
        ("curated+rationale", "curated"),
    ):
        ra, rb = by_arm.get(a, []), by_arm.get(b, [])
        seeds = sorted({r.seed for r in ra} & {r.seed for r in rb})
        if not seeds:
            continue
        pa = {r.seed: np.array(r.correct, dtype=float) for r in ra}
        pb = {r.seed: np.array(r.correct, dtype=float) for r in rb}
        delta = [pa[s] - pb[s] for s in seeds]
        diffs[f"{a} - {b}"] = {"difference": float(np.mean(np.stack(delta))), "ci95": bootstrap(delta, rng)}
    k = sum(teacher)
    return {
        "arms": arms,
        "differences": diffs,
        "teacher": {
            "accuracy": k / len(teacher),
            "wilson95": wilson(k, len(teacher)),
            "samples": len(teacher),
        },
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"\n{'arm':<22} {'accuracy':>9} {'95% CI (boot)':>17} {'Wilson 95%':>17}  per seed")
    for arm, a in summary["arms"].items():
        seeds = " ".join(f"{v:.1%}" for v in a["perSeed"].values())
        print(f"{arm:<22} {a['accuracy']:>9.2%} {_ci(a['ci95']):>17} {_ci(a['wilson95']):>17}  {seeds}")
    t = summary["teacher"]
    print(f"{'teacher (programmatic)':<22} {t['accuracy']:>9.2%} {'':>17} {_ci(t['wilson95']):>17}")
    print()
    for name, d in summary["differences"].items():
        print(f"{name:<42} {100 * d['difference']:+6.2f} points  95% CI {_pts(d['ci95'])}")


def _ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.1%}, {ci[1]:.1%}]"


def _pts(ci: Sequence[float]) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


# ---------------------------------------------------------------------------------------------- main


def run(s: Settings, root: Path) -> tuple[list[ArmResult], list[bool]]:
    jobs = [(arm, seed) for seed in range(s.seeds) for arm in s.arms]
    # Longest first, so the two workers finish together.
    jobs.sort(key=lambda j: (j[0] == "zero-shot", "rationale" not in j[0]))
    for seed in range(s.seeds):  # build each seed's student once, before the workers race to it
        build_student(s, seed, root)
    results: list[ArmResult] = []
    with ProcessPoolExecutor(max_workers=s.workers) as pool:
        futures = {pool.submit(run_arm, s, arm, seed, str(root)): (arm, seed) for arm, seed in jobs}
        for future in futures:
            r = future.result()
            results.append(r)
            print(
                f"  {r.arm:<20} seed {r.seed}: {r.accuracy:6.1%} ({sum(r.correct)}/{len(r.correct)}), "
                f"{r.steps} steps, {r.cpu_seconds:.0f} CPU-s",
                flush=True,
            )
    return results, teacher_accuracy(s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke size: minutes, meaningless figures")
    parser.add_argument("--scale", type=int, default=1, help="width x N, tokens x N^2 (for a GPU)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--real", type=int, help="real training hands (default 4,260)")
    parser.add_argument("--test", type=int, help="held-out hands (default 1,000)")
    parser.add_argument("--arms", nargs="*", choices=ARMS, help="only these arms")
    parser.add_argument("--synthetic", type=int, help="synthetic hands in the curated arms")
    parser.add_argument("--tokens", type=int, help="training tokens per trained arm")
    parser.add_argument("--workers", type=int, help="arms run in parallel (processes)")
    parser.add_argument(
        "--out", type=Path, help="write the JSON here (any tree) instead of benchmarks/results"
    )
    parser.add_argument("--keep", type=Path, help="keep models, data and predictions in this directory")
    args = parser.parse_args(argv)
    s = TINY if args.tiny else Settings()
    if args.scale > 1:
        s = s.scaled(args.scale)
    given = {"seeds": args.seeds, "synthetic": args.synthetic, "tokens": args.tokens, "workers": args.workers,
             "real": args.real, "test": args.test, "arms": tuple(args.arms or ()) or None}  # fmt: skip
    over = {k: v for k, v in given.items() if v is not None}
    s = replace(s, **over)
    rev = revision()
    if args.out is None and (rev.endswith("+dirty") or _script_dirty()):
        print(f"refusing to write benchmarks/results from a dirty tree ({rev}): commit, or pass --out DIR")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"distillation quality: {asdict(s)}", flush=True)
    began = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results, teacher = run(s, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="stratos-dq-") as tmp:
            results, teacher = run(s, Path(tmp))
    summary = summarise(results, teacher)
    print_table(summary)
    report = {
        "settings": asdict(s),
        "mode": _mode(args.tiny, args.scale, over),
        "device": _device(),
        "wallSeconds": round(time.monotonic() - began, 1),
        "machine": machine(),
        **summary,
    }
    path = write_json(NAME + ("-tiny" if args.tiny else ""), report, out_dir=args.out)
    print(f"\nwrote {path} ({report['wallSeconds']:.0f} s)")
    return 0


def _mode(tiny: bool, scale: int, over: dict[str, Any]) -> str:
    """What size ran: ``tiny``, ``scale``, ``default``, or ``reduced`` when a size setting was overridden
    (``--workers`` changes no figure)."""
    if tiny:
        return "tiny"
    size = sorted(k for k in over if k != "workers")
    base = "scale" if scale > 1 else "default"
    return f"reduced ({', '.join(size)} overridden)" if size else base


def _script_dirty() -> bool:
    """Whether this script itself has uncommitted changes (``revision`` looks at operator/ only)."""
    import subprocess

    here = Path(__file__).resolve()
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", here.name],
            cwd=here.parent, capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return True
    return bool(out.strip())


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
