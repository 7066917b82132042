"""The Binder environment (binder/requirements.txt) installs CPU-only torch and the same versions as the
root requirements.txt (issue 18).  Building it for real: tools/check_binder_env.sh (needs the network)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder" / "requirements.txt"


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line.strip())
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_binder_pins_the_cpu_torch_wheel():
    text = BINDER.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch = pins(BINDER)["torch"]
    assert torch.endswith("+cpu"), torch
    assert not any(ln.lower().startswith(("nvidia", "--index-url")) for ln in lines)  # PyPI stays reachable


def test_binder_matches_root_requirements_and_installs_the_project():
    root, binder = pins(ROOT / "requirements.txt"), pins(BINDER)
    assert binder["torch"].removesuffix("+cpu") == root["torch"]
    for name, version in binder.items():
        if name != "torch":
            assert root.get(name) == version, f"{name}: binder {version}, requirements.txt {root.get(name)}"
    block = re.search(r"(?ms)^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text()).group(1)
    deps = re.findall(r'"([^"]+)"', block)  # (tomllib is Python >= 3.11 only; the project supports 3.10)
    assert "torch>=2.1" in deps or any(d.startswith("torch") for d in deps)
    for dep in deps:  # every runtime dependency of the package is pinned for Binder
        assert re.split(r"[<>=!~ ]", dep)[0].lower() in binder, dep
    assert "-e ." in BINDER.read_text().splitlines()


def test_binder_runtime_is_a_supported_python():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert m and int(m.group(1)) >= 10, runtime
    assert (ROOT / "tools" / "check_binder_env.sh").stat().st_mode & 0o111  # executable
