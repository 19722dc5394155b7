"""A stand-in stage program for executor tests: echoes its config into its result.

``python -m support.echo_stage --config C --result R``; config {"fail": true} exits 1 with an error
result, {"sleep": s} sleeps first, {"failOnce": path} fails until ``path`` exists (then creates it),
{"env": [names]} adds those environment variables' values (None when unset) to the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    time.sleep(float(config.get("sleep", 0)))
    marker = config.get("failOnce")
    if config.get("fail") or (marker and not Path(marker).exists()):
        if marker:
            Path(marker).touch()
        Path(args.result).write_text(json.dumps({"ok": False, "error": "asked to fail"}))
        return 1
    result = {"ok": True, "echo": config}
    if config.get("env"):
        result["env"] = {name: os.environ.get(name) for name in config["env"]}
    Path(args.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
