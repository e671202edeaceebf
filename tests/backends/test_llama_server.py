"""backend=llamaserver: flags from the config, and binaries that are not (or not
quite) llama-server — stand-in programs, so each fault is certain.

The real llama-server with the real model: tests/backends/test_llama_server_real.py.
"""

from __future__ import annotations

import http.server
import json
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from cfexp.backends.base import LaunchSpec
from cfexp.backends.llama_server import LlamaServerBackend, server_args
from cfexp.errors import ServerStartError, ServerUnreachableError, SetupError
from tests.app.test_e2e_sim import leftover_processes

# What `llama-server --help` lists, one flag per line as llama.cpp prints them.
HELP_FLAGS = (
    "--model", "--alias", "--host", "--port", "--parallel", "--ctx-size", "--threads",
    "--n-gpu-layers", "--metrics", "--no-cache-prompt", "--cache-ram",
)


def launch(tmp_path: Path, binary: str = "", url: str | None = None, **settings: Any) -> LaunchSpec:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    return LaunchSpec(
        backend="llamaserver", api="openai", host="127.0.0.1", url=url, model_name="gemma3:270m",
        model_file=str(model), n_layers=18, gpu_layers=80, ctx=512, threads=1, slots=2,
        settings_json=json.dumps(settings, sort_keys=True), binary=binary,
    )


def fake_binary(tmp_path: Path, help_flags: tuple[str, ...], run: str, name: str = "llama-server") -> Path:
    """A program whose --help lists ``help_flags`` and which otherwise runs the shell code ``run``."""
    path = tmp_path / name
    listing = "\n".join(f"{flag} N    some option" for flag in help_flags)
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--help" ]; then\ncat <<"EOF"\n{listing}\nEOF\nexit 0\nfi\n{run}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_ctx_is_per_request_so_the_context_flag_is_ctx_times_slots(tmp_path: Path) -> None:
    args = server_args(launch(tmp_path), Path("/m.gguf"), 0)
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert flags["--parallel"] == "2" and flags["--ctx-size"] == "1024"
    assert flags["--model"] == "/m.gguf" and flags["--alias"] == "gemma3:270m"
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "0"
    assert flags["--threads"] == "1" and flags["--n-gpu-layers"] == "80"
    assert "--metrics" in args and "--no-cache-prompt" not in args and "--cache-ram" not in args


def test_a_baseline_gets_no_context_or_layer_flag_so_llama_server_uses_its_defaults(tmp_path: Path) -> None:
    """options_mode=server_defaults: the launch sets neither (docs/reproduce-tr.md, "Server defaults")."""
    base = launch(tmp_path)
    defaults = LaunchSpec(**{**vars(base), "ctx": None, "gpu_layers": None})
    args = server_args(defaults, Path("/m.gguf"), 0)
    assert "--ctx-size" not in args and "--n-gpu-layers" not in args
    assert args[args.index("--parallel") + 1] == "2" and "--metrics" in args


def test_prompt_cache_off_turns_off_both_of_llama_servers_caches(tmp_path: Path) -> None:
    args = server_args(launch(tmp_path, prompt_cache=False), Path("/m.gguf"), 0)
    assert "--no-cache-prompt" in args and args[args.index("--cache-ram") + 1] == "0"
    args = server_args(launch(tmp_path, cache_ram_mib=64, extra_args=["--batch-size", "256"]), Path("/m"), 0)
    assert args[args.index("--cache-ram") + 1] == "64" and args[-2:] == ["--batch-size", "256"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prompt_cach": True}, r"<backend.settings=\['prompt_cach'\]> unknown for backend=llamaserver"),
        ({"prompt_cache": "yes"}, r"<backend.settings.prompt_cache=yes> must be true or false"),
        ({"cache_ram_mib": -5}, r"<backend.settings.cache_ram_mib=-5> must be a whole number of MiB"),
        ({"extra_args": "--x"}, r"<backend.settings.extra_args=--x> must be a list of strings"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(SetupError, match=message):
        server_args(launch(tmp_path, **settings), Path("/m.gguf"), 0)


def test_a_program_that_is_not_a_llama_server_is_refused(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, ("--verbose",), "sleep 60", name="not-a-server")
    with pytest.raises(SetupError, match=r"<backend.binary=.*not-a-server> is not a llama-server: .*--help"):
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 10)


def test_a_llama_server_too_old_for_a_flag_is_refused_naming_the_flag(tmp_path: Path) -> None:
    old = tuple(flag for flag in HELP_FLAGS if flag != "--metrics")
    binary = fake_binary(tmp_path, old, "sleep 60")
    with pytest.raises(SetupError, match=r"too old for the flag\(s\) cfexp passes: --metrics not in its --help"):
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 10)


def test_an_extra_flag_it_lacks_says_where_it_came_from(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, HELP_FLAGS, "sleep 60")
    spec = launch(tmp_path, str(binary), extra_args=["--no-such-flag"])
    with pytest.raises(SetupError, match=r"--no-such-flag not in its --help.*drop it from backend.settings.extra_args"):
        LlamaServerBackend().start(spec, 0, tmp_path / "servers", 10)


def test_a_binary_not_on_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"<backend.binary=no-llama-server-here> is not an executable file"):
        LlamaServerBackend().start(launch(tmp_path, "no-llama-server-here"), 0, tmp_path / "servers", 10)


def test_a_server_dying_at_start_gives_its_own_error_line_and_log(tmp_path: Path) -> None:
    run = 'echo "build: 1 (abc)"; echo "main: error: the backend could not be initialised" >&2; exit 3'
    binary = fake_binary(tmp_path, HELP_FLAGS, run)
    with pytest.raises(ServerStartError) as caught:
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 30)
    message = str(caught.value)
    assert "exited with code 3 at start: main: error: the backend could not be initialised" in message
    assert "build: 1 (abc)" in message  # the log's last lines follow
    assert "the backend could not be initialised" in (tmp_path / "servers" / "server0.log").read_text()


def test_a_flag_refused_at_run_time_is_named(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, HELP_FLAGS, 'echo "error: invalid argument: --metrics" >&2; exit 1')
    with pytest.raises(ServerStartError, match=r"refused the flag --metrics \(exit 1\): it is too old"):
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 30)


def test_a_value_refused_at_run_time_is_named_with_its_reason(tmp_path: Path) -> None:
    run = 'echo "error while handling argument \\"--parallel\\": error: invalid value for n_parallel" >&2; exit 1'
    binary = fake_binary(tmp_path, HELP_FLAGS, run)
    with pytest.raises(ServerStartError, match=r"refused the value of --parallel \(exit 1\): error: invalid value"):
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 30)


def test_a_model_it_cannot_load_gives_the_servers_own_line(tmp_path: Path) -> None:
    run = (
        'echo "gguf_init_from_file_impl: invalid magic characters: \'GGUF\'" >&2; '
        'echo "srv    load_model: failed to load model" >&2; '
        'echo "srv    operator(): exiting due to model loading error" >&2; exit 1'
    )
    binary = fake_binary(tmp_path, HELP_FLAGS, run)
    with pytest.raises(ServerStartError) as caught:
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 30)
    message = str(caught.value)
    assert f"could not load <model.file={tmp_path / 'model.gguf'}>" in message
    assert "gguf_init_from_file_impl: invalid magic characters" in message


def test_a_server_that_never_gets_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, HELP_FLAGS, 'echo "loading model"; exec sleep 60')
    with pytest.raises(ServerStartError, match=r"(?s)did not become ready within 1 s.*loading model"):
        LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, tmp_path / "servers", 1)
    assert leftover_processes(tmp_path) == []


def test_a_busy_port_at_the_url_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        spec = launch(tmp_path, "/bin/true", url=f"http://127.0.0.1:{port}")
        # Something listens there but does not answer HTTP: not a llama-server.
        with pytest.raises(ServerStartError, match=rf"port {port} is in use by something that is not a llama-server"):
            LlamaServerBackend().start(spec, 0, tmp_path / "servers", 10)


def test_a_url_where_another_kind_of_server_answers_is_refused(tmp_path: Path) -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ServerUnreachableError, match=r"answers GET /health with HTTP 404: it is not a llama-server"):
            LlamaServerBackend().start(launch(tmp_path, "/bin/true", url=url), 0, tmp_path / "servers", 10)
    finally:
        server.shutdown()
        server.server_close()


def test_an_earlier_start_in_the_same_log_is_not_read_as_this_one(tmp_path: Path) -> None:
    """A sweep's servers folder keeps one log per instance, appended to by every start
    (per_sweep, a ctx change restarts it). The earlier start's "listening on" line names
    a port where another server answers: this start must not take it for its own."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        servers = tmp_path / "servers"
        servers.mkdir()
        earlier = (
            f"main: server is listening on http://127.0.0.1:{other.server_address[1]}\n"
            "srv    load_model: failed to load model\n"
        )
        (servers / "server0.log").write_text(earlier)
        binary = fake_binary(tmp_path, HELP_FLAGS, 'echo "loading model"; exec sleep 60')
        with pytest.raises(ServerStartError, match=r"did not become ready within 1 s"):
            LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, servers, 1)
        # Nor is an earlier start's error this start's reason for dying.
        binary = fake_binary(tmp_path, HELP_FLAGS, 'echo "main: error: no backend" >&2; exit 3')
        with pytest.raises(ServerStartError) as caught:
            LlamaServerBackend().start(launch(tmp_path, str(binary)), 0, servers, 30)
        assert "exited with code 3 at start: main: error: no backend" in str(caught.value)
        assert "could not load" not in str(caught.value)
        assert (servers / "server0.log").read_text().startswith(earlier)  # the earlier lines are kept
    finally:
        other.shutdown()
        other.server_close()
    assert leftover_processes(tmp_path) == []
