"""No command line is ever handed to a shell: a scan of the package's source.

Processes are started with an argv list (``subprocess.run([...])``), so no
config value (a model name, a URL, a path) can be read as shell syntax. This
fails as soon as code anywhere in ``cfexp/`` or ``hydra_plugins/`` passes
``shell=True``, calls ``os.system``/``os.popen``/``subprocess.getoutput``, or
runs ``sh -c``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cfexp", "hydra_plugins")
_SHELL_FUNCTIONS = {
    ("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
}
_SHELLS = {"sh", "bash", "zsh", "dash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        return (*_dotted(node.value), node.attr)
    return ()


def shell_uses(source: str, filename: str) -> list[str]:
    """Where ``source`` starts a shell, as ``file:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        where = f"{filename}:{node.lineno}"
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append(f"{where}: shell={ast.unparse(keyword.value)}")
        if _dotted(node.func)[-2:] in _SHELL_FUNCTIONS:
            found.append(f"{where}: {ast.unparse(node.func)}()")
        for argument in node.args[:1]:
            if isinstance(argument, (ast.List, ast.Tuple)) and len(argument.elts) >= 2:
                first, second = argument.elts[0], argument.elts[1]
                if (
                    isinstance(first, ast.Constant) and first.value in _SHELLS
                    and isinstance(second, ast.Constant) and second.value == "-c"
                ):
                    found.append(f"{where}: {first.value} -c")
    return found


def test_the_scan_finds_each_kind_of_shell_use() -> None:
    source = (
        "import os, subprocess\n"
        "subprocess.run(f'ollama pull {name}', shell=True)\n"
        "subprocess.Popen(cmd, shell=flag)\n"
        "os.system('ls ' + path)\n"
        "os.popen(cmd)\n"
        "subprocess.getoutput(cmd)\n"
        "subprocess.run(['sh', '-c', cmd])\n"
        "subprocess.run(['ls', path], shell=False)\n"
    )
    assert [line.split(":")[1] for line in shell_uses(source, "x.py")] == ["2", "3", "4", "5", "6", "7"]


def test_no_module_of_the_package_starts_a_shell() -> None:
    files = [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 50  # the scan really looked at the package
    found = [hit for path in files for hit in shell_uses(path.read_text(), str(path.relative_to(REPO)))]
    assert found == []
