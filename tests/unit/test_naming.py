"""Child names are unique per (owner uid, stage, candidate); children are found by labels (issue 15, 5)."""

from __future__ import annotations

import itertools
import re
from typing import Any

from stratos.kube.naming import (
    LABEL_JOB_UID,
    child_key,
    child_labels,
    child_name,
    is_same_child,
    owner_reference,
)
from stratos.kube.serving import service_name, serving_name

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
STAGES = ["teacher-eval", "student-probe", "synthesize", "train", "evaluate", "serve"]


def test_the_collisions_found_by_the_corpus_cannot_happen() -> None:
    # Job "co" training student "synthesize" once needed "co-train-synthesize", job "co-train"'s
    # synthesize Job.
    assert child_name("co", "uid-co", "train", "synthesize") != child_name(
        "co-train", "uid-cot", "synthesize"
    )
    # Same names, even the same (impossible) uid: the identity is length-prefixed before hashing.
    assert child_name("co", "u", "train", "synthesize") != child_name("co-train", "u", "synthesize")
    # Jobs "1job" and "s1job" both mapped to the Service "s1job-serve".
    assert service_name("1job", "uid-1") != service_name("s1job", "uid-2")
    assert serving_name("1job", "uid-1") != serving_name("s1job", "uid-2")


def test_a_namesake_recreated_gets_new_children() -> None:
    assert child_name("dj", "uid-old", "train", "s") != child_name("dj", "uid-new", "train", "s")


def test_names_are_distinct_valid_and_stable_over_many_identities() -> None:
    jobs = ["co", "co-train", "a-b", "a", "b-c", "1job", "s1job", "x" * 63, "x" * 62]
    candidates: list[str | None] = [None, "synthesize", "train", "b", "c", "t-1", "y" * 40]
    seen: dict[str, Any] = {}
    for job, stage, candidate in itertools.product(jobs, STAGES, candidates):
        uid = f"uid-{jobs.index(job)}"
        name = child_name(job, uid, stage, candidate)
        assert len(name) <= 63 and DNS_LABEL.match(name), name
        assert name == child_name(job, uid, stage, candidate)
        assert name not in seen, (name, seen.get(name), (job, stage, candidate))
        seen[name] = (job, stage, candidate)
        svc = child_name(job, uid, stage, candidate, letter_first=True)
        assert svc[0].isalpha() and len(svc) <= 63


def test_children_are_keyed_by_owner_uid_stage_and_candidate() -> None:
    labels = child_labels("co", "uid-co", "train", "synthesize")
    assert labels[LABEL_JOB_UID] == "uid-co"
    assert child_key(labels) == ("uid-co", "train", "synthesize")
    assert child_key(child_labels("co-train", "uid-cot", "synthesize")) == ("uid-cot", "synthesize", "")
    assert child_key({"stratos.io/job": "old-style"}) is None  # no uid label: not found by lookups


def test_an_object_under_the_name_that_is_not_the_child_is_not_adopted() -> None:
    mine = {"metadata": {"name": "dj", "uid": "uid-1"}}
    theirs = {"metadata": {"name": "dj", "uid": "uid-2"}}
    wanted = {
        "metadata": {
            "name": "n",
            "labels": child_labels("dj", "uid-1", "train", "s"),
            "ownerReferences": [owner_reference(mine)],
        }
    }
    assert is_same_child(wanted, wanted)
    other_owner = {"metadata": {**wanted["metadata"], "ownerReferences": [owner_reference(theirs)]}}
    assert not is_same_child(other_owner, wanted)
    other_stage = {"metadata": {**wanted["metadata"], "labels": child_labels("dj", "uid-1", "evaluate", "s")}}
    assert not is_same_child(other_stage, wanted)
    assert not is_same_child({"metadata": {"name": "n"}}, wanted)  # someone's unlabelled object
