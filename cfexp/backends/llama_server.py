"""``backend=llamaserver``: llama.cpp's own ``llama-server``, managed by cfexp.

Unlike cfexp's own server (one request at a time per slot, FIFO), llama-server
serves ``--parallel N`` slots at once with continuous batching and keeps a
prefix cache per slot: the engine real servers (Ollama among them) run. It
speaks the OpenAI API, so agents use ``api: openai``.

The binary is ``backend.binary`` when given (a path, or a name on PATH), else
the one cfexp builds once from the pinned llama.cpp source
(:mod:`cfexp.backends.llama_server_build`). Before the first start of a given
binary, ``<binary> --help`` must list every flag cfexp passes, so a program
that is not a llama-server, or one too old for a flag, is refused with a
message naming the flag.

Each instance is started through ``cfexp-launch`` (it dies with cfexp even if
cfexp is killed outright) in its own process group, logs to
``servers/server<i>.log`` in the job's folder, and is stopped with its
process tree. ``backend.url`` null: it binds a free loopback port itself
(``--port 0``) and cfexp reads the port from its ``listening on`` line; with
a URL, cfexp attaches to a server answering there, else (loopback, port
free, ``start_if_absent``) starts instance i on the URL's port + i. Ready
means ``GET /health`` answers 200 (503 while the model loads).

Flags from the config (docs/serving.md, "llama-server"):

- ``--parallel backend.slots`` and ``--ctx-size ctx × slots``: llama-server
  splits ``-c`` among its slots, so cfexp's ``ctx`` is the context *each
  request* gets, as with Ollama's ``num_ctx``;
- ``--threads`` (``backend.threads``, 0 = the cores split between instances),
  ``--n-gpu-layers gpu_layers`` (ignored by a CPU build);
- ``backend.settings.prompt_cache`` false adds ``--no-cache-prompt`` and
  ``--cache-ram 0`` (no prefix reuse at all); ``cache_ram_mib`` sets
  ``--cache-ram``; ``extra_args`` are appended verbatim;
- always ``--metrics`` (Prometheus ``/metrics``) and ``--alias model.name``;
- the embedded model: ``--chat-template-file`` with cfexp's Gemma 3 template
  (:data:`GEMMA3_TEMPLATE`), since its GGUF ships ChatML.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cfexp.backends.base import LaunchSpec, ServerInstance
from cfexp.backends.llama_server_build import LlamaServerBuild
from cfexp.backends.model_files import embedded_gguf
from cfexp.backends.net import is_loopback, port_free, tls_context
from cfexp.backends.process import ManagedProcess
from cfexp.childproc import launcher_path
from cfexp.errors import ServerStartError, ServerUnreachableError, SetupError

_LISTENING = re.compile(r"listening on https?://(?:\[[^\]]*\]|[^\s:/]+):(\d+)")
# Lines of llama-server's own log that say why it stopped, most telling first.
_BAD_FLAG = re.compile(r"(?:invalid|unknown) argument:?\s*(\S+)", re.IGNORECASE)
_BAD_VALUE = re.compile(r'error while handling argument "([^"]+)": *(.*)')
# llama.cpp's log lines carry a level letter after the time stamp: E = error.
_LEVEL_E = re.compile(r"^\s*[\d.]+ E ")
_BIND_FAILED = "couldn't bind HTTP server socket"
_ERROR_LINE = re.compile(r"error|failed|invalid|unable|cannot|not found|no such", re.IGNORECASE)
_NOT_A_SERVER = ("--ctx-size", "--port")
_SETTING_KEYS = ("prompt_cache", "cache_ram_mib", "extra_args")


@dataclass(frozen=True)
class LlamaServerSettings:
    """``backend.settings`` of backend=llamaserver."""

    # false: --no-cache-prompt --cache-ram 0 (every request evaluates its whole prompt).
    prompt_cache: bool = True
    # --cache-ram MiB (the host-memory prompt cache shared by the slots); None = the server's default.
    cache_ram_mib: int | None = None
    # Flags appended verbatim (checked against --help like the others).
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> LlamaServerSettings:
        unknown = sorted(set(raw) - set(_SETTING_KEYS))
        if unknown:
            raise SetupError(
                f"<backend.settings={unknown}> unknown for backend=llamaserver: its settings are "
                f"{', '.join(_SETTING_KEYS)} (docs/serving.md)"
            )
        prompt_cache = raw.get("prompt_cache", True)
        cache_ram = raw.get("cache_ram_mib")
        extra = raw.get("extra_args", [])
        if not isinstance(prompt_cache, bool):
            raise SetupError(f"<backend.settings.prompt_cache={prompt_cache}> must be true or false")
        if cache_ram is not None and (not isinstance(cache_ram, int) or isinstance(cache_ram, bool) or cache_ram < -1):
            raise SetupError(
                f"<backend.settings.cache_ram_mib={cache_ram}> must be a whole number of MiB "
                "(-1 = no limit, 0 = off) or null"
            )
        if not isinstance(extra, list | tuple) or not all(isinstance(arg, str) for arg in extra):
            raise SetupError(f"<backend.settings.extra_args={extra}> must be a list of strings")
        return cls(prompt_cache=prompt_cache, cache_ram_mib=cache_ram, extra_args=tuple(extra))


# cfexp's Gemma 3 chat template (cfexp/serving/templates.py) in llama.cpp's Jinja:
# system text folded into the first user turn after a blank line, contents
# trimmed, an open model turn at the end; BOS comes from the tokenizer. The
# embedded GGUF's own template is ChatML (<|im_start|>), which Gemma 3 was not
# trained on: with this one both llamacpp backends give the model the same tokens.
GEMMA3_TEMPLATE = """\
{%- set ns = namespace(system='', first=true) -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- set ns.system = ns.system + ('\\n\\n' if ns.system else '') + (message['content'] | trim) -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- if message['role'] != 'system' -%}
{{- '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' -}}
{%- if ns.first and ns.system -%}{{- ns.system + '\\n\\n' -}}{%- endif -%}
{%- set ns.first = false -%}
{{- (message['content'] | trim) + '<end_of_turn>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
"""


def server_args(
    launch: LaunchSpec, model_path: Path, port: int, chat_template: Path | None = None
) -> list[str]:
    """The command-line arguments (after the binary) of one instance.

    ``chat_template``: a Jinja file for --chat-template-file (the embedded model
    gets cfexp's Gemma 3 template); None = the model file's own template.
    """
    settings = LlamaServerSettings.parse(launch.settings)
    args = [
        "--model", str(model_path),
        "--alias", launch.model_name,
        "--host", launch.host,
        "--port", str(port),
        "--parallel", str(launch.slots),
    ]
    # None = not set (a server_defaults baseline): no flag, llama-server's own default.
    if launch.ctx is not None:
        # llama-server splits the context among its slots: each request gets ctx.
        args += ["--ctx-size", str(launch.ctx * launch.slots)]
    args += ["--threads", str(launch.threads)]
    if launch.gpu_layers is not None:
        args += ["--n-gpu-layers", str(launch.gpu_layers)]
    args.append("--metrics")
    if chat_template is not None:
        args += ["--chat-template-file", str(chat_template)]
    cache_ram = settings.cache_ram_mib
    if not settings.prompt_cache:
        args.append("--no-cache-prompt")
        cache_ram = 0 if cache_ram is None else cache_ram
    if cache_ram is not None:
        args += ["--cache-ram", str(cache_ram)]
    return args + list(settings.extra_args)


def flags_of(args: list[str]) -> list[str]:
    return [arg for arg in args if arg.startswith("--")]


@functools.cache
def _help_text(binary: str, size: int, mtime_ns: int) -> str:
    """``binary --help`` (stdout and stderr); cached per file version."""
    try:
        done = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, errors="replace", timeout=60,
            stdin=subprocess.DEVNULL, check=False, env=_server_env(),
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(
            f"<backend.binary={binary}> is not a llama-server: `{binary} --help` did not return within 60 s"
        ) from exc
    except OSError as exc:
        raise SetupError(f"<backend.binary={binary}> cannot be run: {exc}") from exc
    return done.stdout + done.stderr


def check_flags(binary: Path, flags: list[str], extra: tuple[str, ...] = ()) -> None:
    """Refuse a binary that is not a llama-server or lacks a flag cfexp passes
    (``extra``: those that came from backend.settings.extra_args)."""
    stat = binary.stat()
    text = _help_text(str(binary), stat.st_size, stat.st_mtime_ns)

    def listed(flag: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None

    if not all(listed(flag) for flag in _NOT_A_SERVER):
        raise SetupError(
            f"<backend.binary={binary}> is not a llama-server: `{binary.name} --help` does not list "
            f"{' or '.join(_NOT_A_SERVER)}. Give the path of llama.cpp's llama-server, or backend.binary=null "
            "for the one cfexp builds"
        )
    missing = [flag for flag in dict.fromkeys(flags) if not listed(flag)]
    if missing:
        raise SetupError(
            f"<backend.binary={binary}> is a llama-server too old for the flag(s) cfexp passes: "
            f"{', '.join(missing)} not in its --help. Use a newer llama-server (llama.cpp), or "
            "backend.binary=null for the one cfexp builds"
            + (" (or drop it from backend.settings.extra_args)" if set(missing) & set(extra) else "")
        )


def _server_env() -> dict[str, str]:
    """The environment without LLAMA_ARG_* (llama-server reads its flags from them too)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("LLAMA_ARG_")}


def _health(base_url: str, timeout_s: float = 3.0) -> int | None:
    """HTTP status of GET /health (200 ready, 503 loading), None when nothing answers."""
    try:
        return httpx.get(f"{base_url}/health", timeout=timeout_s, verify=tls_context()).status_code
    except httpx.HTTPError:
        return None


def _wait_loaded(base_url: str, timeout_s: float) -> None:
    """An attached server may still be loading its model (503): wait for 200."""
    deadline = time.monotonic() + timeout_s
    while (status := _health(base_url)) != 200:
        if time.monotonic() > deadline:
            raise ServerUnreachableError(
                f"the server at <backend.url={base_url}> answers GET /health with {status}, not 200, "
                f"after {timeout_s:.0f} s: check it (is it loading a model?), or raise timeouts.server_start_s"
            )
        time.sleep(0.2)


def _props(base_url: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{base_url}/props", timeout=10, verify=tls_context())
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _error_line(log_text: str) -> str | None:
    """The server's own line saying what went wrong: its first error-level line,
    else the first that reads like an error (an assertion, a message without level)."""
    lines = log_text.splitlines()
    for line in lines:
        if _LEVEL_E.match(line):
            return line.strip()
    for line in lines:
        if _ERROR_LINE.search(line) and "warning" not in line.lower():
            return line.strip()
    return None


class LlamaServerBackend:
    """Starts (or attaches to) llama-server instances."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir

    def binary(self, launch: LaunchSpec) -> Path:
        """``backend.binary`` resolved, or the built one (built now on first use)."""
        if launch.binary:
            found = shutil.which(launch.binary)
            if found is None:
                raise SetupError(
                    f"<backend.binary={launch.binary}> is not an executable file nor a command on PATH: "
                    "give the path of a llama-server, or backend.binary=null for the one cfexp builds"
                )
            return Path(found)
        return LlamaServerBuild(self._cache_dir).ensure().binary

    def start(self, launch: LaunchSpec, index: int, run_dir: Path, timeout_s: float) -> ServerInstance:
        if launch.url is not None:
            base_url = launch.url  # instance i's: backend.urls[i], or backend.url's port + i
            status = _health(base_url)
            if status in (200, 503):  # a llama-server (ready or loading) runs there: attach
                _wait_loaded(base_url, timeout_s)
                return self._instance(launch, index, base_url, None)
            if status is not None:
                raise ServerUnreachableError(
                    f"the server at <backend.url={base_url}> answers GET /health with HTTP {status}: "
                    "it is not a llama-server. Check backend.url"
                )
            self._may_start_at(launch, base_url)
            port = httpx.URL(base_url).port or 8080
        else:
            port = 0
        binary = self.binary(launch)
        template = None
        if launch.model_file:
            model_path = Path(launch.model_file)
        else:  # the embedded model: cfexp's Gemma 3 template, kept with the server's log
            model_path = embedded_gguf()
            run_dir.mkdir(parents=True, exist_ok=True)
            template = run_dir / "gemma3_chat_template.jinja"
            template.write_text(GEMMA3_TEMPLATE)
        args = server_args(launch, model_path, port, template)
        check_flags(binary, flags_of(args), LlamaServerSettings.parse(launch.settings).extra_args)
        argv = [str(binary), *args]
        launcher = launcher_path()
        if launcher is not None:  # dies with cfexp even if cfexp is killed outright
            argv = [str(launcher), str(run_dir / f"server{index}.rusage.json"), *argv]
        process = ManagedProcess(
            name=f"llama-server{index}", argv=argv, log_path=run_dir / f"server{index}.log", env=_server_env()
        )
        what = f"<backend=llamaserver instance={index} binary={binary}>"
        try:
            base_url = self._wait_ready(process, launch, port, what, model_path, timeout_s)
            return self._instance(launch, index, base_url, process)
        except BaseException:
            process.stop()
            raise

    @staticmethod
    def _may_start_at(launch: LaunchSpec, base_url: str) -> None:
        url = httpx.URL(base_url)
        where = f"<backend=llamaserver url={base_url}>"
        if not launch.start_if_absent:
            raise ServerUnreachableError(
                f"no llama-server answers at {where}: start it, or set backend.start_if_absent=true"
            )
        if not is_loopback(url.host):
            raise ServerUnreachableError(
                f"no llama-server answers at {where}, and cfexp only starts servers on loopback: "
                "check the URL and that the server is running"
            )
        if not port_free(url.host, url.port or 8080):
            raise ServerStartError(
                f"port {url.port} is in use by something that is not a llama-server {where}: "
                "stop it, choose another backend.url, or backend.url=null (a free port)"
            )

    def _wait_ready(
        self, process: ManagedProcess, launch: LaunchSpec, port: int, what: str, model_path: Path, timeout_s: float
    ) -> str:
        deadline = time.monotonic() + timeout_s
        base_url = f"http://{launch.host}:{port}" if port else None
        while True:
            if not process.alive():
                process.wait_ready(5)  # let its last lines reach the log
                raise ServerStartError(self._start_failure(process, what, model_path))
            if base_url is None:
                match = _LISTENING.search(process.log_text())
                if match is not None:
                    if int(match.group(1)) == 0:
                        raise ServerStartError(
                            f"llama-server {what} cannot bind a free port itself (--port 0; too old?): "
                            "give backend.url=http://127.0.0.1:PORT"
                        )
                    base_url = f"http://{launch.host}:{match.group(1)}"
            if base_url is not None and _health(base_url) == 200:
                return base_url
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"llama-server {what} did not become ready within {timeout_s:.0f} s "
                    f"(raise timeouts.server_start_s). Its last log lines:\n{process.tail()}"
                )
            time.sleep(0.1)

    @staticmethod
    def _start_failure(process: ManagedProcess, what: str, model_path: Path) -> str:
        """Why the server exited at start, in the server's own words."""
        text = process.log_text()
        code = process.popen.returncode
        tail = process.tail(12)
        bad_flag = _BAD_FLAG.search(text)
        if bad_flag is not None:
            return (
                f"llama-server {what} refused the flag {bad_flag.group(1)} (exit {code}): it is too old or not "
                "a llama-server; use a newer llama.cpp, or backend.binary=null for the one cfexp builds. "
                f"Its last log lines:\n{tail}"
            )
        bad_value = _BAD_VALUE.search(text)
        if bad_value is not None:
            return (
                f"llama-server {what} refused the value of {bad_value.group(1)} (exit {code}): "
                f"{bad_value.group(2).strip()}. Check backend.slots, ctx, backend.threads, gpu_layers or "
                f"backend.settings.extra_args. Its last log lines:\n{tail}"
            )
        if _BIND_FAILED in text:
            return f"llama-server {what} could not bind its port (in use?). Its last log lines:\n{tail}"
        if "failed to load model" in text:
            reason = _error_line(text) or "(no error line)"
            return (
                f"llama-server {what} could not load <model.file={model_path}>: {reason}. Give a GGUF file "
                f"llama.cpp can load, or model.file=null for the embedded model. Its last log lines:\n{tail}"
            )
        if "failed to create context" in text or "failed to create_context" in text:
            reason = _error_line(text) or "(no error line)"
            return (
                f"llama-server {what} exited with code {code} at start: it could not create its context "
                f"({reason}). Check ctx, backend.slots and backend.settings.extra_args. "
                f"Its last log lines:\n{tail}"
            )
        line = _error_line(text)
        said = f": {line}" if line else ""
        return f"llama-server {what} exited with code {code} at start{said}. Its last log lines:\n{tail}"

    @staticmethod
    def _instance(
        launch: LaunchSpec, index: int, base_url: str, process: ManagedProcess | None
    ) -> ServerInstance:
        # What it is and serves (engine, model digest) is asked by the pool (cfexp.backends.identify).
        build = _props(base_url).get("build_info")
        return ServerInstance(
            index=index, backend="llamaserver", api=launch.api, base_url=base_url, launch=launch,
            process=process, version=build if isinstance(build, str) else None,
        )
