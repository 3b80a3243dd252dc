"""Child process that runs sympy / math-verify comparisons, one JSON request per stdin line.

It is a separate process so the parent can kill it when a comparison runs away (sympy happily tries to
evaluate 9^(9^(9^9))); it has no imports from this package, so it starts from its file path anywhere.
Request: {"id": int, "op": "sympy_equal" | "math_verify", "a": str, "b": str}. Reply: {"id": int, "ok": bool}
or {"id": int, "error": str}. Replies go out on a private copy of the original stdout; file descriptor 1
and `sys.stdout` are pointed at stderr, so nothing a library prints (a parser's warning, C code writing to
fd 1) can land in the reply stream and shift every later reply onto the wrong request.
"""

from __future__ import annotations

import json
import os
import sys


def sympy_equal(first: str, second: str) -> bool:
    import sympy
    from latex2sympy2_extended import latex2sympy

    try:
        difference = latex2sympy(first) - latex2sympy(second)
    except Exception:
        return False
    try:
        return bool(sympy.simplify(difference) == 0)
    except Exception:
        return False


def math_verify_equal(gold: str, prediction: str) -> bool:
    from math_verify import parse, verify

    # verify(gold, pred) is not symmetric: the gold answer must come first.
    gold_parsed = parse(f"${gold}$")
    prediction_parsed = parse(prediction)
    return bool(gold_parsed and prediction_parsed and verify(gold_parsed, prediction_parsed))


OPS = {"sympy_equal": sympy_equal, "math_verify": math_verify_equal}


def private_reply_stream():
    """A line-buffered stream on a duplicate of fd 1; fd 1 and sys.stdout then go to stderr."""
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return replies


def main() -> None:
    replies = private_reply_stream()
    import latex2sympy2_extended  # noqa: F401  (warm the imports before announcing readiness)
    import sympy  # noqa: F401

    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            reply = {"id": request_id, "ok": OPS[request["op"]](request["a"], request["b"])}
        except Exception as exc:
            reply = {"id": request_id, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
