#!/usr/bin/env python3
"""Build the manylinux_2_28 wheels, one per CPython 3.9-3.15, without docker.

    python3 scripts/build-wheels.py [-i PYTHON ...] [-o DIR]

The tools (maturin, zig from the `ziglang` package, auditwheel) are installed
into a venv of their own, build/wheel-tools. The interpreters are found as
tests/test_cpython_suite.py finds them: the newest patch release of each
CPython 3.9-3.15 under $(pyenv root)/versions, then build/cpython/3.N/bin/python3.N
(made by .ci/run) for the minor versions pyenv lacks; `-i` names them instead.

maturin links the extension with zig against glibc 2.28's symbols
(`--zig --compatibility manylinux_2_28`), so the host's newer glibc does not
leak into the wheel. There is one wheel per interpreter: the core uses the
buffer protocol and other APIs outside the limited API before 3.11, so an
abi3 wheel is not an option. Cargo's target directory, build/cargo-target,
is the one the other builds of the project share.

Each wheel goes to dist/ (or -o DIR) and is checked: `auditwheel show` must
find it manylinux_2_28 compatible, its platform tags must include
manylinux_2_28_x86_64, and it must carry the stripped extension, the stubs,
py.typed and the LICENSE. Any failure stops the script with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
TOOLS_VENV = BUILD_DIR / "wheel-tools"
CARGO_TARGET_DIR = BUILD_DIR / "cargo-target"
DIST_DIR = REPO_ROOT / "dist"
# Interpreters made for the tests (see .ci/run): build/cpython/3.N/bin/python3.N.
MADE_INTERPRETERS_DIR = BUILD_DIR / "cpython"
SUPPORTED_MINORS = range(9, 16)  # 3.9 .. 3.15

# The oldest versions these wheels were built and checked with. zig must be one
# the cargo-zigbuild inside maturin knows; both move quickly, so raise the two
# together.
TOOLS = ["maturin>=1.16,<2", "ziglang>=0.17", "auditwheel>=6.8"]

POLICY = "manylinux_2_28"
POLICY_GLIBC = (2, 28)
PLATFORM_TAG = f"{POLICY}_{platform.machine()}"

BUILD_TIMEOUT = 15 * 60

SHT_SYMTAB = 2  # an ELF section header's type: the symbol table


class WheelError(Exception):
    """A wheel could not be built, or is not what it must be."""


# --------------------------------------------------------------------------
# Finding interpreters


def pyenv_root() -> Path:
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            out = subprocess.run(
                [pyenv, "root"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            return Path(out)
    env = os.environ.get("PYENV_ROOT")
    if env:
        return Path(env)
    return Path.home() / ".pyenv"


def find_interpreters() -> dict[tuple[int, int], Path]:
    """Newest patch release of each CPython 3.9-3.15 under the pyenv root,
    then the ones made under build/cpython for minor versions pyenv lacks."""
    versions_dir = pyenv_root() / "versions"
    best: dict[tuple[int, int], tuple[int, Path]] = {}
    entries = list(versions_dir.iterdir()) if versions_dir.is_dir() else []
    for entry in entries:
        # Plain CPython releases only: "3.12.1", not "3.13.0t", "3.12-dev",
        # "pypy3.10-7.3.12" or "miniconda3-latest".
        m = re.fullmatch(r"3\.(\d+)\.(\d+)", entry.name)
        if not m:
            continue
        minor, patch = int(m.group(1)), int(m.group(2))
        if minor not in SUPPORTED_MINORS:
            continue
        exe = entry / "bin" / f"python3.{minor}"
        if not exe.is_file() or not os.access(exe, os.X_OK):
            continue
        if (3, minor) not in best or patch > best[(3, minor)][0]:
            best[(3, minor)] = (patch, exe)
    for minor in SUPPORTED_MINORS:
        exe = MADE_INTERPRETERS_DIR / f"3.{minor}" / "bin" / f"python3.{minor}"
        if (3, minor) not in best and os.access(exe, os.X_OK):
            best[(3, minor)] = (0, exe)
    return {key: exe for key, (_, exe) in sorted(best.items())}


def interpreter_version(exe: Path) -> tuple[int, int]:
    out = subprocess.run(
        [str(exe), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


# --------------------------------------------------------------------------
# The tools


def tools_bin() -> Path:
    """The bin directory of the tools' venv, made (or brought up to TOOLS)
    first when needed."""
    bin_dir = TOOLS_VENV / "bin"
    stamp = TOOLS_VENV / "requirements.txt"
    wanted = "\n".join(TOOLS) + "\n"
    if (bin_dir / "python").exists() and stamp.is_file() and stamp.read_text() == wanted:
        return bin_dir
    if not (bin_dir / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--upgrade", *TOOLS],
        check=True,
    )
    stamp.write_text(wanted)
    return bin_dir


def tool_env(bin_dir: Path) -> dict[str, str]:
    """The environment maturin runs in: zig is `python -m ziglang` of the
    tools' venv, whatever else is on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["CARGO_ZIGBUILD_PYTHON_PATH"] = str(bin_dir / "python")
    env["CARGO_TARGET_DIR"] = str(CARGO_TARGET_DIR)
    env.pop("VIRTUAL_ENV", None)
    return env


# --------------------------------------------------------------------------
# Building and checking


def build_wheel(bin_dir: Path, exe: Path, out_dir: Path) -> Path:
    """Build the wheel for one interpreter into out_dir; its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=BUILD_DIR) as tmp:
        cmd = [
            str(bin_dir / "maturin"),
            "build",
            "--release",
            "--zig",
            "--compatibility",
            POLICY,
            "--interpreter",
            str(exe),
            "--out",
            tmp,
        ]
        result = subprocess.run(
            cmd, cwd=REPO_ROOT, env=tool_env(bin_dir), timeout=BUILD_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise WheelError(f"maturin build for {exe} failed (status {result.returncode})")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WheelError(f"maturin build for {exe} made {len(wheels)} wheels, not one")
        target = out_dir / wheels[0].name
        shutil.move(str(wheels[0]), str(target))
        return target


def platform_tags(wheel: Path) -> set[str]:
    """The platform tags in a wheel's file name (name-version-py-abi-plat.whl)."""
    return set(wheel.name[: -len(".whl")].split("-")[-1].split("."))


def glibc_of(tag: str) -> tuple[int, int] | None:
    """The glibc version a manylinux platform tag requires; None otherwise."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag)
    if m:
        return int(m.group(1)), int(m.group(2))
    return legacy.get(tag.split("_", 1)[0])


def audit(bin_dir: Path, wheel: Path) -> dict:
    """`auditwheel show --json`: the wheel must be manylinux_2_28 compatible
    (its overall tag a manylinux one of glibc 2.28 or older) and depend on
    no library outside the policy's."""
    result = subprocess.run(
        [str(bin_dir / "auditwheel"), "show", "--json", str(wheel)],
        capture_output=True,
        text=True,
        env=tool_env(bin_dir),
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise WheelError(f"auditwheel show {wheel.name} failed:\n{result.stderr}")
    report = json.loads(result.stdout)
    glibc = glibc_of(report["overall_tag"])
    if glibc is None or glibc > POLICY_GLIBC:
        raise WheelError(
            f"{wheel.name}: auditwheel finds it {report['overall_tag']}, not {POLICY} compatible"
            f" (symbol versions: {report['versioned_symbols']})"
        )
    if report["external_libs"]:
        raise WheelError(
            f"{wheel.name}: links libraries outside {POLICY}: {report['external_libs']}"
        )
    return report


def is_stripped_elf(data: bytes) -> bool:
    """Whether a 64-bit little-endian ELF file has no symbol table (.symtab)
    left: what strip removes. Its dynamic symbols stay."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise WheelError("the extension is not a 64-bit little-endian ELF file")
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    for i in range(shnum):
        header = data[shoff + i * shentsize : shoff + (i + 1) * shentsize]
        if int.from_bytes(header[4:8], "little") == SHT_SYMTAB:
            return False
    return True


def check_contents(wheel: Path) -> None:
    """The wheel carries the stripped extension, a stub beside each module
    (the command line, __main__, has none), py.typed and the LICENSE."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        extensions = [n for n in names if re.fullmatch(r"socketserver_rs/_core\..*\.so", n)]
        if len(extensions) != 1:
            raise WheelError(f"{wheel.name}: {len(extensions)} extension modules, not one")
        if not is_stripped_elf(zf.read(extensions[0])):
            raise WheelError(f"{wheel.name}: {extensions[0]} is not stripped")
        modules = {n[: -len(".py")] for n in names if n.endswith(".py")}
        modules.discard("socketserver_rs/__main__")
        modules.add("socketserver_rs/_core")
        missing = sorted(m + ".pyi" for m in modules if m + ".pyi" not in names)
        missing += [n for n in ["socketserver_rs/py.typed"] if n not in names]
        if not any(re.fullmatch(r"[^/]+\.dist-info/licenses/LICENSE", n) for n in names):
            missing.append("*.dist-info/licenses/LICENSE")
        if missing:
            raise WheelError(f"{wheel.name}: missing {', '.join(missing)}")


def check_wheel(bin_dir: Path, wheel: Path) -> dict:
    """All the checks of one wheel; auditwheel's report."""
    if PLATFORM_TAG not in platform_tags(wheel):
        raise WheelError(f"{wheel.name}: {PLATFORM_TAG} is not among its platform tags")
    check_contents(wheel)
    return audit(bin_dir, wheel)


def build_all(interpreters: list[Path], out_dir: Path) -> list[Path]:
    """Build and check one wheel per interpreter; their paths."""
    bin_dir = tools_bin()
    wheels = []
    for exe in interpreters:
        started = time.monotonic()
        print(f"==> {exe}", flush=True)
        wheel = build_wheel(bin_dir, exe, out_dir)
        report = check_wheel(bin_dir, wheel)
        took = time.monotonic() - started
        print(f"==> {wheel.name}: auditwheel {report['overall_tag']} ({took:.0f} s)", flush=True)
        wheels.append(wheel)
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-i",
        "--interpreter",
        action="append",
        type=Path,
        help="a Python to build for (repeatable); default: every CPython 3.9-3.15 found",
    )
    parser.add_argument("-o", "--out", type=Path, default=DIST_DIR, help="default: dist/")
    args = parser.parse_args(argv)
    if args.interpreter:
        interpreters = args.interpreter
    else:
        found = find_interpreters()
        missing = [f"3.{m}" for m in SUPPORTED_MINORS if (3, m) not in found]
        if missing:
            print(f"warning: no CPython {', '.join(missing)} found", file=sys.stderr)
        interpreters = list(found.values())
    if not interpreters:
        print("error: no CPython 3.9-3.15 found", file=sys.stderr)
        return 1
    try:
        wheels = build_all(interpreters, args.out.resolve())
    except (WheelError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(str(w) for w in wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
