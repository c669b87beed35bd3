#!/usr/bin/env python3
"""Build the wheels: manylinux_2_28 ones per CPython found, macOS and Windows ones cross-compiled.

    python3 scripts/build-wheels.py [-i PYTHON ...] [-t TARGET ...] [--cross-python 3.N] [-o DIR]

The tools (maturin, zig from the `ziglang` package, auditwheel) are installed
into a venv of their own, build/wheel-tools.

Linux (the host's target): one manylinux_2_28 wheel per interpreter. They
are found as tests/test_cpython_suite.py finds them: the newest patch release
of each CPython 3.9-3.15 under $(pyenv root)/versions, then
build/cpython/3.N/bin/python3.N (made by .ci/run) for the minor versions pyenv
lacks, and the free-threaded build/cpython/3.14t/bin/python3 (a cp314t
wheel); `-i` names them instead. maturin links the extension with zig against
glibc 2.28's symbols (`--zig --compatibility manylinux_2_28`), so the host's
newer glibc does not leak into the wheel. There is one wheel per interpreter:
the core uses the buffer protocol and other APIs outside the limited API
before 3.11, so an abi3 wheel is not an option.

macOS (x86_64-apple-darwin, aarch64-apple-darwin) and Windows
(x86_64-pc-windows-gnu): one wheel each, for one CPython version
(--cross-python, default 3.13), cross-compiled without an
interpreter of that platform: macOS's linked by zig (`--zig`) against the
stubs of the system libraries zig carries, not Apple's SDK (maturin warns
that it lacks one), Windows' by Debian's mingw-w64 (gcc-mingw-w64-x86-64).
pyo3 links python3N.dll by name (raw-dylib), so no import library of a
Windows Python is needed; its `generate-import-lib` feature is deprecated
and does nothing from 0.30. Each needs its Rust target (`rustup target add
TARGET`). `-t` picks targets; the default is all of them.

Cargo's target directory, build/cargo-target, is the one the other builds of
the project share. Each wheel goes to dist/ (or -o DIR) and is checked: its
platform tag; the extension (one, named for its platform, an ELF, Mach-O or
PE file of the target's architecture, stripped on Linux), the stubs,
py.typed and the LICENSE; and for Linux `auditwheel show` must find it
manylinux_2_28 compatible. Any failure stops the script with status 1.
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
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build"
TOOLS_VENV = BUILD_DIR / "wheel-tools"
CARGO_TARGET_DIR = BUILD_DIR / "cargo-target"
DIST_DIR = REPO_ROOT / "dist"
# Interpreters made for the tests (see .ci/run): build/cpython/3.N/bin/python3.N.
MADE_INTERPRETERS_DIR = BUILD_DIR / "cpython"
SUPPORTED_MINORS = range(9, 16)  # 3.9 .. 3.15
FREE_THREADED = MADE_INTERPRETERS_DIR / "3.14t" / "bin" / "python3"

# The oldest versions these wheels were built and checked with. zig must be one
# the cargo-zigbuild inside maturin knows; both move quickly, so raise the two
# together.
TOOLS = ["maturin>=1.16,<2", "ziglang>=0.17", "auditwheel>=6.8"]

POLICY = "manylinux_2_28"
POLICY_GLIBC = (2, 28)
PLATFORM_TAG = f"{POLICY}_{platform.machine()}"
HOST_TARGET = f"{platform.machine()}-unknown-linux-gnu"
# The CPython version of the cross-compiled wheels, one per target: each
# version is another full build of the core.
CROSS_PYTHON = "3.13"

BUILD_TIMEOUT = 15 * 60

SHT_SYMTAB = 2  # an ELF section header's type: the symbol table
# Architecture numbers in the headers of ELF (e_machine), Mach-O (cputype)
# and PE (Machine) files.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}
MACHO_CPUS = {0x01000007: "x86_64", 0x0100000C: "arm64"}
PE_MACHINES = {0x8664: "x86_64", 0xAA64: "arm64"}


class Foreign(NamedTuple):
    """A target whose wheel is cross-compiled: what maturin needs for it and
    what its wheel must hold."""

    triple: str
    platform_tag: str  # a regular expression the wheel's platform tag matches
    extension: str  # the extension's file name; {v} is the version, "313"
    binary: tuple[str, str]  # the extension's format and architecture
    maturin_args: tuple[str, ...]
    linker: str | None = None  # a program the build needs beside Rust's target


FOREIGN_TARGETS = {
    t.triple: t
    for t in [
        Foreign(
            "x86_64-apple-darwin",
            r"macosx_\d+_\d+_x86_64",
            "_core.cpython-{v}-darwin.so",
            ("Mach-O", "x86_64"),
            ("--zig",),
        ),
        Foreign(
            "aarch64-apple-darwin",
            r"macosx_\d+_\d+_arm64",
            "_core.cpython-{v}-darwin.so",
            ("Mach-O", "arm64"),
            ("--zig",),
        ),
        Foreign(
            "x86_64-pc-windows-gnu",
            "win_amd64",
            "_core.cp{v}-win_amd64.pyd",
            ("PE", "x86_64"),
            (),
            linker="x86_64-w64-mingw32-gcc",
        ),
    ]
}


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


def find_free_threaded() -> Path | None:
    """The free-threaded CPython made under build/cpython, if any."""
    return FREE_THREADED if os.access(FREE_THREADED, os.X_OK) else None


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


def missing_toolchain(target: str) -> str | None:
    """What a build for target lacks here (its Rust standard library, a
    linker), said with how to get it; None when nothing is missing."""
    foreign = FOREIGN_TARGETS.get(target)
    if foreign is None:
        return None
    try:
        libdir = subprocess.run(
            ["rustc", "--print", "target-libdir", "--target", target],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "rustc is not on PATH"
    if not list(Path(libdir).glob("libstd-*")):
        return f"no Rust standard library for {target} (rustup target add {target})"
    if foreign.linker and not shutil.which(foreign.linker):
        return f"no {foreign.linker} for {target} (apt-get install gcc-mingw-w64-x86-64)"
    return None


# --------------------------------------------------------------------------
# Building and checking


def maturin_build(bin_dir: Path, args: list[str], what: str, out_dir: Path, **env: str) -> Path:
    """`maturin build --release ARGS` into out_dir, which must make one
    wheel; its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=BUILD_DIR) as tmp:
        cmd = [str(bin_dir / "maturin"), "build", "--release", *args, "--out", tmp]
        result = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env={**tool_env(bin_dir), **env},
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise WheelError(f"maturin build for {what} failed (status {result.returncode})")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WheelError(f"maturin build for {what} made {len(wheels)} wheels, not one")
        target = out_dir / wheels[0].name
        shutil.move(str(wheels[0]), str(target))
        return target


def build_wheel(bin_dir: Path, exe: Path, out_dir: Path) -> Path:
    """Build the manylinux wheel for one interpreter into out_dir; its path."""
    args = ["--zig", "--compatibility", POLICY, "--interpreter", str(exe)]
    return maturin_build(bin_dir, args, str(exe), out_dir)


def build_foreign(bin_dir: Path, foreign: Foreign, version: str, out_dir: Path) -> Path:
    """Cross-compile the wheel of a foreign target for CPython `version`
    ("3.13"); its path. pyo3 takes the version from the environment, as
    there is no interpreter of that platform to ask."""
    missing = missing_toolchain(foreign.triple)
    if missing:
        raise WheelError(missing)
    args = ["--target", foreign.triple, "--interpreter", f"python{version}"]
    args += foreign.maturin_args
    return maturin_build(
        bin_dir,
        args,
        f"{foreign.triple} (CPython {version})",
        out_dir,
        PYO3_CROSS_PYTHON_VERSION=version,
    )


def wheel_tags(wheel: Path) -> tuple[str, str, set[str]]:
    """The Python tag, ABI tag and platform tags in a wheel's file name
    (name-version-python-abi-platform.whl)."""
    python, abi, platforms = wheel.name[: -len(".whl")].split("-")[-3:]
    return python, abi, set(platforms.split("."))


def platform_tags(wheel: Path) -> set[str]:
    """The platform tags in a wheel's file name."""
    return wheel_tags(wheel)[2]


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


def binary_format(data: bytes) -> tuple[str, str]:
    """The format of an executable file and the architecture it is for,
    read from its headers: ("ELF", "x86_64"), ("Mach-O", "arm64"),
    ("PE", "x86_64"); ("unknown", "") for anything else."""
    if data[:4] == b"\x7fELF":
        machine = int.from_bytes(data[18:20], "little")
        return "ELF", ELF_MACHINES.get(machine, hex(machine))
    if data[:4] == b"\xcf\xfa\xed\xfe":  # MH_MAGIC_64, little-endian
        cpu = int.from_bytes(data[4:8], "little")
        return "Mach-O", MACHO_CPUS.get(cpu, hex(cpu))
    if data[:2] == b"MZ":  # a DOS header, whose e_lfanew points to the PE header
        pe = int.from_bytes(data[0x3C:0x40], "little")
        if data[pe : pe + 4] == b"PE\0\0":
            machine = int.from_bytes(data[pe + 4 : pe + 6], "little")
            return "PE", PE_MACHINES.get(machine, hex(machine))
    return "unknown", ""


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


def check_contents(wheel: Path, extension: str, binary: tuple[str, str]) -> None:
    """The wheel carries one extension, whose name matches the regular
    expression `extension` and whose file is of format and architecture
    `binary` (stripped if ELF), a stub beside each public module and the
    extension, py.typed and the LICENSE."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        extensions = [
            n for n in names if n.startswith("socketserver_rs/_core.") and not n.endswith(".pyi")
        ]
        if len(extensions) != 1:
            raise WheelError(f"{wheel.name}: extension modules {extensions}, not one")
        if not re.fullmatch(extension, extensions[0]):
            raise WheelError(f"{wheel.name}: {extensions[0]} does not match {extension}")
        data = zf.read(extensions[0])
        found = binary_format(data)
        if found != binary:
            raise WheelError(f"{wheel.name}: {extensions[0]} is {found}, not {binary}")
        if binary[0] == "ELF" and not is_stripped_elf(data):
            raise WheelError(f"{wheel.name}: {extensions[0]} is not stripped")
        # Private modules (a leading underscore) are annotated inline.
        modules = {
            n[: -len(".py")] for n in names if re.fullmatch(r"socketserver_rs/[^_/][^/]*\.py", n)
        }
        modules.add("socketserver_rs/_core")
        missing = sorted(m + ".pyi" for m in modules if m + ".pyi" not in names)
        missing += [n for n in ["socketserver_rs/py.typed"] if n not in names]
        if not any(re.fullmatch(r"[^/]+\.dist-info/licenses/LICENSE", n) for n in names):
            missing.append("*.dist-info/licenses/LICENSE")
        if missing:
            raise WheelError(f"{wheel.name}: missing {', '.join(missing)}")


def check_wheel(bin_dir: Path, wheel: Path) -> dict:
    """All the checks of one manylinux wheel; auditwheel's report."""
    if PLATFORM_TAG not in platform_tags(wheel):
        raise WheelError(f"{wheel.name}: {PLATFORM_TAG} is not among its platform tags")
    machine = platform.machine()
    extension = rf"socketserver_rs/_core\.cpython-\d+t?-{machine}-linux-gnu\.so"
    check_contents(wheel, extension, ("ELF", machine))
    return audit(bin_dir, wheel)


def check_foreign(wheel: Path, foreign: Foreign, version: str) -> None:
    """All the checks of one cross-compiled wheel, for CPython `version`."""
    cp = "cp" + version.replace(".", "")
    python, abi, platforms = wheel_tags(wheel)
    if (python, abi) != (cp, cp):
        raise WheelError(f"{wheel.name}: tagged {python}-{abi}, not {cp}-{cp}")
    if not all(re.fullmatch(foreign.platform_tag, tag) for tag in platforms):
        raise WheelError(f"{wheel.name}: a platform tag is not {foreign.platform_tag}")
    extension = "socketserver_rs/" + foreign.extension.format(v=cp[2:])
    check_contents(wheel, re.escape(extension), foreign.binary)


def build_all(
    interpreters: list[Path], targets: list[str], cross_python: str, out_dir: Path
) -> list[Path]:
    """Build and check the wheels of each target: for the host's, one per
    interpreter; for a foreign one, one for CPython `cross_python`. Their
    paths."""
    missing = [m for m in map(missing_toolchain, targets) if m]
    if missing:
        raise WheelError("; ".join(missing))
    bin_dir = tools_bin()
    wheels = []
    for target in targets:
        foreign = FOREIGN_TARGETS.get(target)
        for exe in interpreters if foreign is None else [None]:
            started = time.monotonic()
            if foreign is None:
                assert exe is not None
                print(f"==> {exe}", flush=True)
                wheel = build_wheel(bin_dir, exe, out_dir)
                verdict = "auditwheel " + check_wheel(bin_dir, wheel)["overall_tag"]
            else:
                print(f"==> {target}, CPython {cross_python}", flush=True)
                wheel = build_foreign(bin_dir, foreign, cross_python, out_dir)
                check_foreign(wheel, foreign, cross_python)
                verdict = "checked"
            took = time.monotonic() - started
            print(f"==> {wheel.name}: {verdict} ({took:.0f} s)", flush=True)
            wheels.append(wheel)
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-i",
        "--interpreter",
        action="append",
        type=Path,
        help="a Python to build a Linux wheel for (repeatable); default: every CPython found",
    )
    targets = [HOST_TARGET, *FOREIGN_TARGETS]
    parser.add_argument(
        "-t",
        "--target",
        action="append",
        choices=targets,
        help="a target to build for (repeatable); default: all",
    )
    parser.add_argument(
        "--cross-python",
        default=CROSS_PYTHON,
        metavar="3.N",
        help=f"the CPython version of the macOS and Windows wheels; default: {CROSS_PYTHON}",
    )
    parser.add_argument("-o", "--out", type=Path, default=DIST_DIR, help="default: dist/")
    args = parser.parse_args(argv)
    targets = args.target or targets
    if not re.fullmatch(r"3\.\d+", args.cross_python):
        parser.error(f"--cross-python {args.cross_python}: not a version like {CROSS_PYTHON}")
    if args.interpreter:
        interpreters = args.interpreter
    else:
        found = find_interpreters()
        missing = [f"3.{m}" for m in SUPPORTED_MINORS if (3, m) not in found]
        free_threaded = find_free_threaded()
        if free_threaded is None:
            missing.append("3.14t")
        if missing and HOST_TARGET in targets:
            print(f"warning: no CPython {', '.join(missing)} found", file=sys.stderr)
        interpreters = [*found.values(), *([free_threaded] if free_threaded else [])]
    if HOST_TARGET in targets and not interpreters:
        print("error: no CPython 3.9-3.15 found", file=sys.stderr)
        return 1
    try:
        wheels = build_all(interpreters, targets, args.cross_python, args.out.resolve())
    except (WheelError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(str(w) for w in wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
