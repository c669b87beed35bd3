"""The wheels a user installs: scripts/build-wheels.py builds one
manylinux_2_28 wheel per CPython 3.9-3.15 found; each is checked (its tag,
auditwheel's verdict, what it carries), installed into a fresh venv of its
interpreter without the network and made to serve a real request there."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import require

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "build-wheels.py"

# The script is a file with a dash in its name, not a module on the path.
_spec = importlib.util.spec_from_file_location("build_wheels", SCRIPT)
assert _spec is not None and _spec.loader is not None
build_wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_wheels)

pytestmark = pytest.mark.slow

INTERPRETERS = build_wheels.find_interpreters()
# The tools' install, then seven builds of about a minute at most each with a
# cold cargo cache on two cores; then a venv, an install and a request.
BUILD_ALL_TIMEOUT = 15 * 60
TIMEOUT = BUILD_ALL_TIMEOUT + 3 * 60


def _timeout_mark(seconds: int):
    """pytest-timeout's mark when the plugin is there, else no mark at all."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return lambda func: func
    return pytest.mark.timeout(seconds)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the script as a user does, into a directory of its own: the
    wheels it made by minor version, and the tools' bin directory."""
    require(shutil.which("cargo"), "cargo is not on PATH")
    require(INTERPRETERS, "no CPython 3.9-3.15 found")
    try:
        bin_dir = build_wheels.tools_bin()
    except (OSError, subprocess.CalledProcessError) as exc:
        require(False, f"maturin, zig and auditwheel could not be installed: {exc}")
    out = tmp_path_factory.mktemp("dist")
    log = out / "build.log"
    with open(log, "w") as fh:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(out)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=BUILD_ALL_TIMEOUT,
            check=False,
        )
    output = log.read_text()
    assert result.returncode == 0, f"build-wheels.py failed:\n{output[-6000:]}"
    wheels = {}
    for wheel in out.glob("*.whl"):
        python_tag = wheel.name.split("-")[2]  # cp312
        wheels[int(python_tag[len("cp3") :])] = wheel
    return {"wheels": wheels, "bin": bin_dir}


SERVE = textwrap.dedent(
    """
    import json
    import socket
    import threading

    import socketserver_rs
    from socketserver_rs import _core


    class Echo(socketserver_rs.StreamRequestHandler):
        def handle(self):
            self.wfile.write(self.rfile.readline().upper())


    with socketserver_rs.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        serving = threading.Thread(target=server.serve_forever, args=(0.05,))
        serving.start()
        try:
            with socket.create_connection(server.server_address, timeout=10) as client:
                client.sendall(b"a line from the wheel\\n")
                reply = client.makefile("rb").readline()
        finally:
            server.shutdown()
            serving.join(10)
    print(json.dumps({
        "reply": reply.decode(),
        "stopped": not serving.is_alive(),
        "package": socketserver_rs.__file__,
        "core": _core.__file__,
    }))
    """
)


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env=env, check=False, **kwargs
    )
    assert result.returncode == 0, (
        f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@_timeout_mark(TIMEOUT)
@pytest.mark.parametrize("minor", list(build_wheels.SUPPORTED_MINORS), ids=lambda m: f"3.{m}")
def test_wheel(minor: int, built: dict, tmp_path: Path) -> None:
    require((3, minor) in INTERPRETERS, f"no CPython 3.{minor} found")
    wheel = built["wheels"].get(minor)
    assert wheel is not None, f"no wheel for 3.{minor} among {sorted(built['wheels'].values())}"

    assert "manylinux_2_28_x86_64" in build_wheels.platform_tags(wheel), wheel.name
    report = build_wheels.check_wheel(built["bin"], wheel)
    assert report["overall_tag"] == "manylinux_2_28_x86_64", report

    venv = tmp_path / "venv"
    _run([str(INTERPRETERS[(3, minor)]), "-m", "venv", str(venv)], f"venv for 3.{minor}")
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        f"pip install {wheel.name}",
    )
    # -I: neither the current directory nor PYTHON* variables: the installed
    # package, not the sources, is what serves.
    proc = _run([str(python), "-I", "-c", SERVE], f"serving with {wheel.name}", cwd=tmp_path)
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["reply"] == "A LINE FROM THE WHEEL\n"
    assert served["stopped"]
    site = (venv / "lib" / f"python3.{minor}" / "site-packages").resolve()
    for key in ("package", "core"):
        assert Path(served[key]).resolve().is_relative_to(site), served[key]
