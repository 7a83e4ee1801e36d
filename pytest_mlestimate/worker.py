"""Entry point of the child process that measures one profile: ``python -m pytest_mlestimate.worker OUT``.

Reads a scenario as JSON on stdin and writes ``{"profile": ...}`` or ``{"error": ...}`` to OUT (stdout
is left to the model's own prints).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    try:
        from pytest_mlestimate.errors import EstimateError
        from pytest_mlestimate.profiler import profile_scenario
        from pytest_mlestimate.scenario import Scenario

        scenario = Scenario.model_validate_json(sys.stdin.read())
        try:
            profile = profile_scenario(scenario, isolated=True)
        except EstimateError as exc:
            out.write_text(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
            return 0
        out.write_text(json.dumps({"profile": profile.model_dump(mode="json")}))
        return 0
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        out.write_text(json.dumps({"error": {"type": "ProfileCrash", "message": detail}}))
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
