"""Training-data synthesis (the paper's "Knowledge Alignment" and "Knowledge Injection").

The stage program is `stratos.workloads.synthesize`; this package holds its parts:

- `config`: the stage's camelCase JSON config;
- `store`: the dataset file (trl's conversational JSONL) and the resumable state ledger beside it;
- `prompts`: prompts and reply parsing that are not the task plug-in's (new-question generation,
  the answer-leak check, composing a reply into a training target);
- `sources`: which real questions are used and how synthetic candidates are made from them;
- `engine`: rejection sampling and verification per item, and the bounded-concurrency scheduler.
"""
