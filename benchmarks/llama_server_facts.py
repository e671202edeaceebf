"""What llama-server sends, measured on the built binary with the embedded model.

    python benchmarks/llama_server_facts.py [--out facts.json]

Starts llama-server through cfexp's backend (so with the flags cfexp passes),
sends raw HTTP requests and prints what came back: where ``timings`` and
``usage`` sit in a stream, whether the end-of-turn token is counted, the
prompt cache, the monitoring endpoints, a prompt longer than the context, and
two concurrent streams on ``--parallel 2`` and ``--parallel 1``. The facts
are written up in docs/serving.md ("llama-server").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.llama_server import LlamaServerBackend

MODEL = "gemma3:270m"


BINARY = ""  # --binary; "" = the one cfexp builds
THREADS = 1


def spec(slots: int = 1, ctx: int = 512, **settings: object) -> LaunchSpec:
    return LaunchSpec(
        backend="llamaserver", api="openai", host="127.0.0.1", url=None, model_name=MODEL, model_file=None,
        n_layers=18, gpu_layers=0, ctx=ctx, threads=THREADS, slots=slots,
        settings_json=json.dumps(settings, sort_keys=True), binary=BINARY,
    )


@contextmanager
def server(launch: LaunchSpec) -> Iterator[ServerInstance]:
    with tempfile.TemporaryDirectory() as folder:
        instance = LlamaServerBackend().start(launch, 0, Path(folder), 300)
        try:
            yield instance
        finally:
            assert instance.process is not None
            instance.process.stop()


def stream(base_url: str, body: dict[str, Any], marks: list[tuple[str, float]] | None = None,
           name: str = "") -> dict[str, Any]:
    """POST a streamed chat completion; every SSE data object, with its arrival time."""
    events: list[dict[str, Any]] = []
    raw: list[str] = []
    started = time.monotonic()
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=300) as r:
        status = r.status_code
        if status != 200:
            return {"status": status, "body": r.read().decode()}
        for line in r.iter_lines():
            if not line.startswith("data: "):
                if line.strip():
                    raw.append(line)
                continue
            payload = line[len("data: "):]
            now = time.monotonic() - started
            if payload == "[DONE]":
                events.append({"_done": True, "_t": now})
                if marks is not None:
                    marks.append((f"{name}:done", time.monotonic()))
                continue
            obj = json.loads(payload)
            obj["_t"] = now
            events.append(obj)
            content = (obj.get("choices") or [{}])[0].get("delta", {}).get("content") if obj.get("choices") else None
            if marks is not None and content:
                marks.append((f"{name}:content", time.monotonic()))
    return {"status": status, "events": events, "other_lines": raw}


def content_chunks(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        for choice in event.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                out.append(text)
    return out


def where(events: list[dict[str, Any]], key: str) -> list[int]:
    return [i for i, event in enumerate(events) if key in event]


def tokenize(base_url: str, text: str) -> int:
    return len(httpx.post(f"{base_url}/tokenize", json={"content": text}, timeout=30).json()["tokens"])


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **extra}


def stream_shape(base_url: str) -> dict[str, Any]:
    with_usage = stream(base_url, chat("Write one short sentence about rain.", max_tokens=16, temperature=0,
                                       stream_options={"include_usage": True}))
    without = stream(base_url, chat("Write one short sentence about rain.", max_tokens=16, temperature=0))
    events = with_usage["events"]
    last_json = [e for e in events if "_done" not in e]
    return {
        "chunks": len(events),
        "content_chunks": len(content_chunks(events)),
        "timings_in_chunks": where(events, "timings"),
        "usage_non_null_in_chunks": [i for i, e in enumerate(events) if e.get("usage")],
        "finish_reason_in_chunks": [i for i, e in enumerate(events)
                                    if any(c.get("finish_reason") for c in e.get("choices") or [])],
        "last_json_chunk": {k: v for k, v in last_json[-1].items() if k != "_t"},
        "second_last_json_chunk": {k: v for k, v in last_json[-2].items() if k != "_t"},
        "without_include_usage": {
            "usage_non_null_in_chunks": [i for i, e in enumerate(without["events"]) if e.get("usage")],
            "timings_in_chunks": where(without["events"], "timings"),
            "chunks": len(without["events"]),
        },
        "first_chunk": {k: v for k, v in events[0].items() if k != "_t"},
    }


# The embedded model is a base model: it rarely ends a turn by itself within a
# few dozen tokens. A logit bias on Gemma's <end_of_turn> (token 106) makes it
# sample that token early — still a stop by the model's own end-of-generation
# token (llama.cpp's STOP_TYPE_EOS), the case to count. A stop string is the
# other way a reply ends with finish_reason "stop".
END_OF_TURN_TOKEN = "106"
STOPS: list[tuple[str, dict[str, Any]]] = [
    ("eot, logit_bias 12", {"logit_bias": {END_OF_TURN_TOKEN: 12}}),
    ("eot, logit_bias 100", {"logit_bias": {END_OF_TURN_TOKEN: 100}}),
    ("stop string \\n", {"stop": ["\n"]}),
    ("no stop (max_tokens)", {"max_tokens": 8}),
]


def end_of_turn(base_url: str) -> list[dict[str, Any]]:
    results = []
    for name, extra in STOPS:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 64,
                "temperature": 0, "stream_options": {"include_usage": True}, **extra}
        got = stream(base_url, body)
        events = got["events"]
        finish = [c.get("finish_reason") for e in events for c in e.get("choices") or [] if c.get("finish_reason")]
        usage: dict[str, Any] = next((e["usage"] for e in events if e.get("usage")), {})
        timings: dict[str, Any] = next((e["timings"] for e in events if e.get("timings")), {})
        chunks = content_chunks(events)
        text = "".join(chunks)
        results.append({
            "case": name,
            "finish_reason": finish[-1] if finish else None,
            "text": text,
            "content_chunks": len(chunks),
            "tokens_of_text": tokenize(base_url, text) if text else 0,
            "usage_completion_tokens": usage.get("completion_tokens"),
            "timings_predicted_n": timings.get("predicted_n"),
        })
    return results


def prompt_cache(base_url: str) -> dict[str, Any]:
    prompt = "Summarise the benefits of unit testing for a small software team in three bullet points."
    rows = []
    for attempt in range(3):
        got = stream(base_url, chat(prompt, max_tokens=8, temperature=0, stream_options={"include_usage": True}))
        events = got["events"]
        timings: dict[str, Any] = next((e["timings"] for e in events if e.get("timings")), {})
        usage: dict[str, Any] = next((e["usage"] for e in events if e.get("usage")), {})
        rows.append({"attempt": attempt, "timings": timings, "usage": usage})
    extended = stream(base_url, chat(prompt + " Then name one risk.", max_tokens=8, temperature=0,
                                     stream_options={"include_usage": True}))
    rows.append({"attempt": "same prefix, longer prompt",
                 "timings": next((e["timings"] for e in extended["events"] if e.get("timings")), {}),
                 "usage": next((e["usage"] for e in extended["events"] if e.get("usage")), {})})
    rows.append({"slots_after": httpx.get(f"{base_url}/slots", timeout=30).json()})
    off = stream(base_url, chat(prompt, max_tokens=8, temperature=0, cache_prompt=False,
                                stream_options={"include_usage": True}))
    off_timings: dict[str, Any] = next((e["timings"] for e in off["events"] if e.get("timings")), {})
    return {"repeats": rows, "request_cache_prompt_false": off_timings}


def endpoints(base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in ("/health", "/slots", "/metrics", "/props", "/v1/models"):
        response = httpx.get(f"{base_url}{path}", timeout=30)
        text = response.text
        out[path] = {"status": response.status_code, "body": text[:3000]}
    response = httpx.post(f"{base_url}/props", json={}, timeout=30)
    out["POST /props"] = {"status": response.status_code, "body": response.text[:500]}
    return out


def too_long(base_url: str) -> dict[str, Any]:
    prompt = " ".join(f"word{i}" for i in range(400))  # ~1200 tokens
    streamed = stream(base_url, chat(prompt, max_tokens=8))
    whole = httpx.post(f"{base_url}/v1/chat/completions", json=chat(prompt, max_tokens=8), timeout=120)
    near = " ".join(f"word{i}" for i in range(150))  # fits, but not with 64 more tokens
    near_stream = stream(base_url, chat(near, max_tokens=64, temperature=0, ignore_eos=True,
                                        stream_options={"include_usage": True}))
    near_events = near_stream.get("events", [])
    return {
        "near_limit": {
            "prompt_tokens": tokenize(base_url, near),
            "status": near_stream["status"],
            "content_chunks": len(content_chunks(near_events)),
            "finish": [c.get("finish_reason") for e in near_events for c in e.get("choices") or []
                       if c.get("finish_reason")],
            "usage": next((e["usage"] for e in near_events if e.get("usage")), None),
            "body": near_stream.get("body"),
        },
        "prompt_tokens": tokenize(base_url, prompt),
        "stream": {k: v for k, v in streamed.items() if k != "events"} | {"events": streamed.get("events", [])[:3]},
        "non_stream": {"status": whole.status_code, "body": whole.text[:1000]},
    }


def concurrency(base_url: str) -> dict[str, Any]:
    marks: list[tuple[str, float]] = []
    body = chat("Tell me a long story about a dragon.", max_tokens=48, temperature=0, ignore_eos=True)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        results[name] = stream(base_url, body, marks, name)

    first = threading.Thread(target=run, args=("a",))
    first.start()
    while not any(m[0] == "a:content" for m in marks):
        time.sleep(0.005)
    second = threading.Thread(target=run, args=("b",))
    second.start()
    first.join()
    second.join()
    t0 = marks[0][1]
    order = [(name, round((t - t0) * 1000, 1)) for name, t in sorted(marks, key=lambda m: m[1])]
    a_done = next(t for n, t in order if n == "a:done")
    b_first = next(t for n, t in order if n == "b:content")
    b_done = next(t for n, t in order if n == "b:done")
    a_timings = next(e["timings"] for e in results["a"]["events"] if e.get("timings"))
    b_timings = next(e["timings"] for e in results["b"]["events"] if e.get("timings"))
    return {
        "b_first_content_ms": b_first, "a_done_ms": a_done, "b_done_ms": b_done,
        "a_content_after_b_first": sum(1 for n, t in order if n == "a:content" and t > b_first),
        "overlap": b_first < a_done,
        "a_timings": a_timings, "b_timings": b_timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--binary", default="", help="a llama-server (default: the one cfexp builds)")
    parser.add_argument("--threads", type=int, default=1, help="--threads per instance")
    args = parser.parse_args()
    global BINARY, THREADS
    BINARY, THREADS = args.binary, args.threads
    facts: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_before": os.getloadavg()}
    with server(spec(slots=1, ctx=512)) as instance:
        base = instance.base_url
        facts["version"] = instance.version
        facts["stream_shape"] = stream_shape(base)
        facts["end_of_turn"] = end_of_turn(base)
        facts["prompt_cache"] = prompt_cache(base)
        facts["endpoints_with_cfexp_flags"] = endpoints(base)
        facts["prompt_longer_than_ctx_512"] = too_long(base)
        facts["parallel_1"] = concurrency(base)
    with server(spec(slots=2, ctx=512)) as instance:
        facts["parallel_2"] = concurrency(instance.base_url)
        facts["slots_parallel_2"] = httpx.get(f"{instance.base_url}/slots", timeout=30).json()
    facts["load_after"] = os.getloadavg()
    text = json.dumps(facts, indent=2, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
