"""The wheels a user installs: scripts/build-wheels.py builds one
manylinux_2_28 wheel per CPython 3.9-3.15 found and for the free-threaded
3.14t; each is checked (its tag, auditwheel's verdict, what it carries),
installed into a fresh venv of its interpreter without the network and made
to serve a real request there. The macOS and Windows wheels are
cross-compiled and inspected (tags, contents, the extension's headers): no
interpreter of those systems runs here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
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
FREE_THREADED = build_wheels.find_free_threaded()
# The tools' install, then eight builds of about a minute at most each with a
# cold cargo cache on two cores; then a venv, an install and a request.
BUILD_ALL_TIMEOUT = 15 * 60
TIMEOUT = BUILD_ALL_TIMEOUT + 3 * 60
# One cross-compiled build of the core (its dependencies too, for a new
# target): about two minutes on two busy cores.
FOREIGN_TIMEOUT = 8 * 60


def _timeout_mark(seconds: int):
    """pytest-timeout's mark when the plugin is there, else no mark at all."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return lambda func: func
    return pytest.mark.timeout(seconds)


@pytest.fixture(scope="module")
def tools() -> Path:
    """The bin directory of the wheel tools (maturin, zig, auditwheel)."""
    require(shutil.which("cargo"), "cargo is not on PATH")
    try:
        return build_wheels.tools_bin()
    except (OSError, subprocess.CalledProcessError) as exc:
        require(False, f"maturin, zig and auditwheel could not be installed: {exc}")
        raise


def _build(out: Path, args: list[str], timeout: int) -> dict[str, Path]:
    """Run the script as a user does, into out: the wheels it made by ABI
    tag (cp312, cp314t)."""
    log = out / "build.log"
    with open(log, "w") as fh:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(out), *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    output = log.read_text()
    assert result.returncode == 0, f"build-wheels.py failed:\n{output[-6000:]}"
    return {build_wheels.wheel_tags(wheel)[1]: wheel for wheel in out.glob("*.whl")}


@pytest.fixture(scope="module")
def built(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The Linux wheels, and the tools' bin directory."""
    require(INTERPRETERS, "no CPython 3.9-3.15 found")
    out = tmp_path_factory.mktemp("dist")
    wheels = _build(out, ["--target", build_wheels.HOST_TARGET], BUILD_ALL_TIMEOUT)
    return {"wheels": wheels, "bin": tools}


SERVE = textwrap.dedent(
    """
    import json
    import socket
    import sys
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
        "gil": getattr(sys, "_is_gil_enabled", lambda: True)(),
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


def _serve_installed(interpreter: Path, wheel: Path, tmp_path: Path) -> dict:
    """Install the wheel into a fresh venv of interpreter and serve a request
    with it there: what the request saw."""
    venv = tmp_path / "venv"
    _run([str(interpreter), "-m", "venv", str(venv)], f"venv for {interpreter}")
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
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    for key in ("package", "core"):
        assert Path(served[key]).resolve().is_relative_to(site.resolve()), served[key]
    return served


@_timeout_mark(TIMEOUT)
@pytest.mark.parametrize("minor", list(build_wheels.SUPPORTED_MINORS), ids=lambda m: f"3.{m}")
def test_wheel(minor: int, built: dict, tmp_path: Path) -> None:
    require((3, minor) in INTERPRETERS, f"no CPython 3.{minor} found")
    wheel = built["wheels"].get(f"cp3{minor}")
    assert wheel is not None, f"no wheel for 3.{minor} among {sorted(built['wheels'].values())}"

    assert build_wheels.wheel_tags(wheel)[:2] == (f"cp3{minor}", f"cp3{minor}"), wheel.name
    assert "manylinux_2_28_x86_64" in build_wheels.platform_tags(wheel), wheel.name
    report = build_wheels.check_wheel(built["bin"], wheel)
    assert report["overall_tag"] == "manylinux_2_28_x86_64", report

    _serve_installed(INTERPRETERS[(3, minor)], wheel, tmp_path)


@_timeout_mark(TIMEOUT)
def test_free_threaded_wheel(built: dict, tmp_path: Path) -> None:
    # A cp314t wheel, installed into a 3.14t venv: the interpreter keeps its
    # GIL off after importing the package and serving with it.
    require(FREE_THREADED, f"no free-threaded CPython at {build_wheels.FREE_THREADED}")
    wheel = built["wheels"].get("cp314t")
    assert wheel is not None, f"no cp314t wheel among {sorted(built['wheels'].values())}"

    assert build_wheels.wheel_tags(wheel)[:2] == ("cp314", "cp314t"), wheel.name
    report = build_wheels.check_wheel(built["bin"], wheel)
    assert report["overall_tag"] == "manylinux_2_28_x86_64", report
    with zipfile.ZipFile(wheel) as zf:
        assert "socketserver_rs/_core.cpython-314t-x86_64-linux-gnu.so" in zf.namelist()

    served = _serve_installed(FREE_THREADED, wheel, tmp_path)
    assert served["gil"] is False, served


# What a cross-compiled wheel must be: its platform tag, the extension's
# name for CPython 3.N ({v}: 3N) and how its file starts.
FOREIGN = {
    "x86_64-apple-darwin": ("macosx_10_12_x86_64", "_core.cpython-{v}-darwin.so"),
    "aarch64-apple-darwin": ("macosx_11_0_arm64", "_core.cpython-{v}-darwin.so"),
    "x86_64-pc-windows-gnu": ("win_amd64", "_core.cp{v}-win_amd64.pyd"),
}


def _header_of(target: str, data: bytes, v: str) -> None:
    """The extension is a Mach-O or PE file of the target's architecture."""
    if target.endswith("apple-darwin"):
        # MH_MAGIC_64 then the CPU type, little-endian.
        cpu = {"x86_64": 0x01000007, "aarch64": 0x0100000C}[target.split("-")[0]]
        assert data[:4] == b"\xcf\xfa\xed\xfe", data[:4]
        assert int.from_bytes(data[4:8], "little") == cpu
    else:
        # A DOS header whose e_lfanew points to "PE\0\0", then the machine.
        assert data[:2] == b"MZ", data[:2]
        pe = int.from_bytes(data[0x3C:0x40], "little")
        assert data[pe : pe + 4] == b"PE\0\0"
        assert int.from_bytes(data[pe + 4 : pe + 6], "little") == 0x8664  # x86-64
        assert f"python{v}.dll".encode() in data  # the CPython it is for


@_timeout_mark(FOREIGN_TIMEOUT)
@pytest.mark.parametrize("target", sorted(FOREIGN))
def test_foreign_wheel(target: str, tools: Path, tmp_path: Path) -> None:
    missing = build_wheels.missing_toolchain(target)
    require(missing is None, f"cannot build for {target}: {missing}")
    version = build_wheels.CROSS_PYTHON
    v = version.replace(".", "")
    wheels = _build(tmp_path, ["--target", target], FOREIGN_TIMEOUT - 30)

    platform_tag, extension = FOREIGN[target]
    (wheel,) = wheels.values()
    assert re.fullmatch(rf"socketserver_rs-[^-]+-cp{v}-cp{v}-{platform_tag}\.whl", wheel.name)
    package = REPO_ROOT / "python" / "socketserver_rs"
    sources = {f"socketserver_rs/{p.name}" for p in package.glob("*.py*") if p.suffix != ".pyc"}
    ext = f"socketserver_rs/{extension.format(v=v)}"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert sources | {"socketserver_rs/py.typed", ext} <= names, sorted(names)
        package_files = {n for n in names if n.startswith("socketserver_rs/")}
        assert package_files - sources == {"socketserver_rs/py.typed", ext}, sorted(names)
        _header_of(target, zf.read(ext), v)
