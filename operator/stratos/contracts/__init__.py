"""What crosses the boundaries between the operator and the programs it starts.

- ``runs``: the stage machine's requests to an executor (a stage run, the serving endpoint) and the
  states it reads back, plus the storage mount path every stage pod shares;
- ``stage_io``: the stage programs' file format: the config model base, the result writer (valid,
  under 4 KiB, secrets masked) and the error vocabulary a failed stage reports;
- one module per stage program (``teacher_eval``, ``vocab_check``, ``student_probe``, ``synthesize``,
  ``train``, ``evaluate``): its ``Config`` (built by the stage machine, parsed by the program) and its
  ``Result`` (written by the program, read once by the machine); ``teacher`` is the teacher connection
  the teacher-calling configs share.

Data and plumbing only: nothing here decides or talks to Kubernetes, so the controller, the local
runner, the builders of child objects and the stage programs can all depend on it.
"""
