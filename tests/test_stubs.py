"""The stubs match the built package, ship with it and type-check; so does the
implementation beneath them."""

import shutil
import subprocess
import sys
from pathlib import Path

import socketserver_rs

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "python" / "socketserver_rs"
ALLOWLIST = Path(__file__).resolve().parent / "stubtest_allowlist.txt"


def run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_stubs_match_the_package():
    # Every module of the installed package against its stub: the Rust
    # module's binary and each .py file (those without a stub against
    # themselves).
    result = run("mypy.stubtest", "socketserver_rs", "--allowlist", str(ALLOWLIST))
    assert result.returncode == 0, result.stdout + result.stderr
    modules = {path.stem for path in SOURCE.glob("*.py*") if path.suffix in (".py", ".pyi")}
    assert f"Success: no issues found in {len(modules)} modules" in result.stdout


def test_stubs_ship_with_the_package():
    # One stub beside each module of the public API, in the installed package
    # (private modules, with a leading underscore, are annotated inline).
    modules = {p.stem for p in SOURCE.glob("*.py") if not p.stem.startswith("_")}
    installed = Path(socketserver_rs.__file__).parent
    assert {path.stem for path in installed.glob("*.pyi")} >= modules | {"_core"}
    assert (installed / "py.typed").exists()


def test_package_type_checks():
    # mypy reads a module's .pyi before its .py: this checks the stubs.
    result = run("mypy", "--config-file", "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_implementation_type_checks(tmp_path):
    # The .py files on their own, as mypy read them before they had stubs.
    package = tmp_path / "socketserver_rs"
    package.mkdir()
    for path in [*SOURCE.glob("*.py"), SOURCE / "_core.pyi", SOURCE / "py.typed"]:
        shutil.copy(path, package)
    (tmp_path / "mypy.ini").write_text("[mypy]\npython_version = 3.10\n")
    result = run("mypy", "--config-file", "mypy.ini", "socketserver_rs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
