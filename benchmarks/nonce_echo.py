"""Does the small base model echo the cache-defeating nonce? Measured per nonce form.

With ``prompt_cache=defeat`` every measured call's first message starts with a
nonce no earlier call shared (docs/record-schema.md §5), so a server's prefix
cache cannot serve the prompt. The embedded Gemma 3 270M is a base-sized model
that does not follow instructions: it may copy the nonce into its reply, which
changes what it generates and pollutes the report-quality scores. This script
sends the workflow's real prompts (``cfexp/data/prompts.json``, rendered as the
agents render them) to cfexp's own llama.cpp server with each candidate nonce
form and without one, and counts how often the reply contains the nonce.

- Forms (``FORMS``), each at the very start of the first message unless
  said otherwise: none; the schema-1 form ``[cfexp <run_id>/<agent>/<i>]``
  (32-hex run id); the bracketed salt ``[<salt>-<n>-<i>]``; a plain sentence
  ``Request <salt>-<n>-<i>.``; an HTML comment ``<!-- <salt>-<n>-<i> -->``;
  ``(<salt>-<n>-<i>)`` on the first line, before its text; and the bracketed
  salt at the *end* of the first message (for comparison only: a nonce that
  does not start the prompt leaves everything before it shared — the system
  message, or the whole single_inference prompt, which has none — so a prefix
  cache still serves that much). The salt is 12 hex digits drawn afresh for
  every call (in cfexp the harness draws one per agent process).
- Steps: single_inference, analysis (the shipped corpus's data summary),
  report (three prose findings and recommendations of benchmarks/prompt_tokens.py);
  personas in turn.
- Sampling as cfexp's defaults (temperature 0.8, top_p 0.9, top_k 40,
  repeat_penalty 1.1, num_ctx 512), ``num_predict`` 64, seed = the repetition
  index: repetition r uses the same seed for every form (paired), so the forms
  differ only by their nonce.
- Echo, three ways: "tagged" — the reply holds a hex-looking word of 6+
  characters (a copy of the nonce, or one the model made up after its
  pattern: a base model that restates its prompt restates the nonce line
  too); "copied" — 6 consecutive characters of this call's salt
  (case-insensitive); "whole" — the whole nonce line. For "none" the checks
  run against a salt that was not sent (the chance rate).
- Tokens: the prompt in the model's own tokens (Gemma chat template, as
  benchmarks/prompt_tokens.py); "shared prefix" is the longest common token
  prefix of the same prompt rendered with two different salts — what a prefix
  cache could reuse between two calls.

Usage: ``python benchmarks/nonce_echo.py [--reps 7] [--forms ...] [--json calls.json] [--no-write]``
(``--from-json calls.json`` re-renders a saved run); rewrites its section of
docs/benchmarks.md. 7 forms × 21 calls take ~40 min on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import machine_line, write_section  # noqa: E402
from benchmarks.prompt_tokens import ITEMS, chat_text, max_items  # noqa: E402
from cfexp.agents.python_agent.prompts import (  # noqa: E402
    PromptTemplate,
    build_messages,
    data_summary,
    format_items,
)
from cfexp.agents.python_agent.workflow import read_corpus  # noqa: E402
from cfexp.agents.spec import nonce_text  # noqa: E402

DATA = REPO / "cfexp" / "data"
NUM_PREDICT = 64
OPTIONS = {"num_ctx": 512, "temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}
STEPS = ("single_inference", "analysis", "report")
SECTION, TITLE = "nonce-echo", "Prompt cache and the nonce"


@dataclass(frozen=True)
class Nonce:
    """Where the nonce goes, what it says, and the part of it no other call shares."""

    text: str
    unique: str
    at_end: bool = False


def _v1(salt: str, agent: int, call: int) -> Nonce:
    run_id = salt + secrets.token_hex(10)  # a 32-hex-digit run id, as uuid4().hex
    return Nonce(f"[cfexp {run_id}/agent_{agent}/{call}]\n", run_id)


FORMS: dict[str, Callable[[str, int, int], Nonce | None]] = {
    "none": lambda salt, agent, call: None,
    "[cfexp <run_id>/<agent>/<i>] (schema 1)": _v1,
    "[<salt>-<n>-<i>]": lambda salt, agent, call: Nonce(f"[{salt}-{agent}-{call}]\n", salt),
    "Request <salt>-<n>-<i>.": lambda salt, agent, call: Nonce(f"Request {salt}-{agent}-{call}.\n", salt),
    "<!-- <salt>-<n>-<i> -->": lambda salt, agent, call: Nonce(f"<!-- {salt}-{agent}-{call} -->\n", salt),
    "(<salt>-<n>-<i>) on the first line": lambda salt, agent, call: Nonce(f"({salt}-{agent}-{call}) ", salt),
    "[<salt>-<n>-<i>] at the end of the first message": lambda salt, agent, call: Nonce(
        f"\n\n[{salt}-{agent}-{call}]", salt, at_end=True
    ),
}

# A hex-looking word of 6+ characters with a letter and a digit: a copied nonce,
# or one the model made up after the nonce's pattern. (None in the replies
# without a nonce: the chance rate.)
HEX_TAG = re.compile(
    r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{6,}(?![0-9A-Za-z])"
)


def messages(template: PromptTemplate, values: dict[str, str], nonce: Nonce | None) -> list[dict[str, str]]:
    if nonce is None:
        return build_messages(template, values)
    if not nonce.at_end:
        return build_messages(template, values, nonce.text)
    out = build_messages(template, values)
    out[0]["content"] += nonce.text
    return out


def copied(reply: str, unique: str) -> bool:
    """The reply holds 6 consecutive characters of ``unique`` (case-insensitive)."""
    reply = reply.lower()
    return any(unique[i : i + 6].lower() in reply for i in range(len(unique) - 5))


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    # One thread: on a shared, oversubscribed machine llama.cpp's spinning
    # threads wait for each other; the echo does not depend on the speed.
    settings = {"n_ctx": 512, "n_threads": 1}
    command = [sys.executable, "-m", "cfexp.serving", "--engine", "llamacpp", "--port", "0",
               "--settings", json.dumps(settings), "--die-with-parent"]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("CFEXP_SERVING_READY"):
        proc.kill()
        sys.exit(f"the server did not start: {line!r}\n{log.read_text()[-2000:]}")
    port = line.split("port=")[1].strip()
    return proc, f"http://127.0.0.1:{port}"


def chat(base_url: str, msgs: list[dict[str, str]], seed: int) -> dict[str, Any]:
    body = {
        "model": "gemma3:270m",
        "messages": msgs,
        "stream": False,
        "options": {**OPTIONS, "seed": seed, "num_predict": NUM_PREDICT},
    }
    request = urllib.request.Request(
        base_url + "/api/chat", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def measure(reps: int, forms: list[str], base_url: str) -> list[dict[str, Any]]:
    """Every call: form, step, seed, nonce, reply, and the prompt's token counts."""
    import llama_cpp

    from cfexp.backends.model_files import embedded_gguf

    vocab = llama_cpp.Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)

    def tokens(msgs: list[dict[str, str]]) -> list[int]:
        return list(vocab.tokenize(chat_text(msgs).encode(), add_bos=True, special=True))

    prompts = {
        step: PromptTemplate(**raw) for step, raw in json.loads((DATA / "prompts.json").read_text()).items()
    }
    personas = json.loads((DATA / "personas.json").read_text())
    summary = data_summary(read_corpus(DATA / "corpus"))
    findings, recommendations = ITEMS["prose"]
    calls: list[dict[str, Any]] = []
    started = time.monotonic()
    for rep in range(reps):
        persona = list(personas.values())[rep % len(personas)]
        agent = rep % 2
        for step in STEPS:
            values = {"persona_instructions": persona["instructions"], "data_summary": summary}
            if step == "report":
                values["findings"] = format_items(max_items(findings))
                values["recommendations"] = format_items(max_items(recommendations))
            call = 1 if step == "report" else 0
            for form in forms:
                make = FORMS[form]
                salt = secrets.token_hex(6)
                nonce = make(salt, agent, call)
                msgs = messages(prompts[step], values, nonce)
                reply = chat(base_url, msgs, seed=rep)
                other = messages(prompts[step], values, make(secrets.token_hex(6), agent, call))
                calls.append(
                    {
                        "form": form,
                        "step": step,
                        "seed": rep,
                        "nonce": nonce.text if nonce else None,
                        # "none": a salt that was not sent, for the chance rate.
                        "unique": nonce.unique if nonce else salt,
                        "reply": reply["message"]["content"],
                        "eval_count": reply.get("eval_count"),
                        "tokens": len(tokens(msgs)),
                        "shared": common_prefix(tokens(msgs), tokens(other)),
                    }
                )
        print(
            f"rep {rep + 1}/{reps}: {len(calls)} calls in {time.monotonic() - started:.0f} s", file=sys.stderr
        )
    return calls


def summarize(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per form, in FORMS order."""
    rows = []
    for form in FORMS:
        mine = [c for c in calls if c["form"] == form]
        if not mine:
            continue
        rows.append(
            {
                "form": form,
                "calls": len(mine),
                "tag": sum(bool(HEX_TAG.search(c["reply"])) for c in mine),
                "copy": sum(copied(c["reply"], c["unique"]) for c in mine),
                "full": sum(c["nonce"] is not None and c["nonce"].strip() in c["reply"] for c in mine),
                "tokens": statistics.mean(c["tokens"] for c in mine),
                "shared": statistics.mean(c["shared"] for c in mine),
                "eval_count": statistics.mean(c["eval_count"] or 0 for c in mine),
            }
        )
    return rows


def is_chosen(form: str) -> bool:
    """Whether ``form`` is the one the agents send (cfexp.agents.spec.nonce_text)."""
    nonce = FORMS[form]("0123456789ab", 0, 1) if form in FORMS else None
    return nonce is not None and not nonce.at_end and nonce.text == nonce_text("0123456789ab", "agent_0", 1)


def table(calls: list[dict[str, Any]], reps: int, seconds: float, when: str) -> str:
    rows = summarize(calls)
    base = next(r for r in rows if r["form"] == "none")
    pct = lambda n, total: f"{n} ({100 * n / total:.0f} %)"  # noqa: E731
    lines = [
        f"{when}, `python benchmarks/nonce_echo.py --reps {reps}` ({seconds / 60:.0f} min).",
        "cfexp's own server (`--engine llamacpp`, embedded Gemma 3 270M, `n_ctx` 512, 1 thread), Ollama API;",
        f"{reps} repetitions × 3 steps (single_inference, analysis, report; personas in turn) per form,",
        f"`num_predict` {NUM_PREDICT}, temperature 0.8, seed = repetition (the same seeds for every form).",
        "Tagged: the reply holds a hex-looking word of 6+ characters (the nonce copied, or one made up after",
        "its pattern); copied: 6 consecutive characters of this call's salt (or run id); whole: the whole",
        "nonce line. For `none` the checks run against a salt that was not sent (the chance rate).",
        "Prompt tokens: the mean prompt in the model's tokens, chat template included; shared prefix: the",
        "tokens two calls of the same prompt share from the start (what a prefix cache can reuse).",
        "",
        "| nonce form | calls | replies tagged | salt copied | whole nonce | prompt tokens (Δ) | shared prefix tokens | output tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " **(chosen)**" if is_chosen(r["form"]) else ""
        delta = r["tokens"] - base["tokens"]
        lines.append(
            f"| `{r['form']}`{mark} | {r['calls']} | {pct(r['tag'], r['calls'])} | {pct(r['copy'], r['calls'])} | "
            f"{r['full']} | {r['tokens']:.0f} ({delta:+.0f}) | {r['shared']:.0f} | {r['eval_count']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions per form (each: 3 steps)")
    parser.add_argument("--forms", nargs="*", default=list(FORMS), help="forms to measure (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write every call (nonce, reply) as JSON here"
    )
    parser.add_argument("--from-json", type=Path, default=None, help="re-render a table saved with --json")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        body = table(saved["calls"], saved["reps"], saved["seconds"], saved["when"])
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # the server stops too
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"nonce_echo_server_{os.getpid()}.log"
        proc, base_url = start_server(log)
        started = time.monotonic()
        try:
            calls = measure(args.reps, args.forms, base_url)
        finally:
            proc.terminate()
            proc.wait(30)
        seconds, when = time.monotonic() - started, machine_line()
        body = table(calls, args.reps, seconds, when)
        if args.json:
            saved = {"reps": args.reps, "seconds": seconds, "when": when, "calls": calls}
            args.json.write_text(json.dumps(saved, indent=1, ensure_ascii=False))
    if args.no_write:
        print(body)
    else:
        write_section(args.out, SECTION, TITLE, body)


if __name__ == "__main__":
    main()
