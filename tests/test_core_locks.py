"""The core holds no lock while Python code runs (src/locks.rs): every
mutex of the core is a locks::Lock, whose guards are counted per thread and
checked where the core calls Python. This test keeps it so: no other mutex
in src/, and the check in place at each kind of call into Python."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The file objects' lock serialises callers across Python calls, as the
# standard files do; its waiters release the interpreter (stream/lock.rs).
EXEMPT = {SRC / "locks.rs", SRC / "stream" / "lock.rs"}

RAW_LOCKS = re.compile(r"\b(Mutex|RwLock|ReentrantMutex|parking_lot)\b")


def rust_files():
    return sorted(p for p in SRC.rglob("*.rs") if p not in EXEMPT)


def code_lines(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//", 1)[0]
        if code.strip():
            yield number, code


def test_every_mutex_of_the_core_is_a_counted_lock():
    found = [
        f"{path.relative_to(SRC)}:{number}: {code.strip()}"
        for path in rust_files()
        for number, code in code_lines(path)
        if RAW_LOCKS.search(code)
    ]
    assert found == [], "use locks::Lock (see src/locks.rs):\n" + "\n".join(found)


PYTHON_CALLS = re.compile(r"\.(call0|call1|call|call_method0|call_method1|call_method)\(")


def test_the_core_calls_python_only_through_pycall():
    # pycall.rs checks the locks, and keeps a daemon thread's exit safe.
    found = [
        f"{path.relative_to(SRC)}:{number}: {code.strip()}"
        for path in rust_files()
        if path.name != "pycall.rs"
        for number, code in code_lines(path)
        if PYTHON_CALLS.search(code.replace("self.call(", ""))
    ]
    assert found == [], "call Python through pycall.rs:\n" + "\n".join(found)


def test_calls_into_python_check_that_no_lock_is_held():
    # Each place the core runs Python code or takes the interpreter back.
    checked = {
        "detach.rs": "py.detach(",
        "pycall.rs": "let sleeper = Sleeper;",
    }
    for name, call in checked.items():
        lines = [code for _, code in code_lines(SRC / name)]
        at = next(i for i, code in enumerate(lines) if call in code)
        assert any("assert_unlocked(" in code for code in lines[max(0, at - 3) : at]), (
            f"{name}: {call} without assert_unlocked() before it"
        )
