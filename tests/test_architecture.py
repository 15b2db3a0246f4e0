"""The shape rules of docs/ARCHITECTURE.md that code can check: ``pose`` imports neither Prefect nor DVC (nor
DVCLive, which imports DVC), and model-family names appear only in the family modules and where a user's setting
is read."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILY_NAME = re.compile(r"['\"](hourglass|openpose)['\"]")
# where a family name is a user's setting being read: a params section, or the optimizer's grouping value
SETTING_READS = (re.compile(r"""section\(p, ["']openpose["']\)"""), re.compile(r"""select_profile\(section, "openpose\""""),
                 re.compile(r"""from_mapping\(cls, merged, source, "openpose"\)"""),
                 re.compile(r"""grouping == "openpose"|'param_groups': None \| 'openpose'|null or 'openpose'"""),
                 re.compile(r"""load_params\(\)\.get\("openpose"\)|section_skeleton\(.*"openpose","""))


def test_pose_imports_neither_prefect_nor_dvc() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import pose\n"
        "names = [m.name for m in pkgutil.walk_packages(pose.__path__, 'pose.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'dvc', 'dvclive'))\n"
        "print(json.dumps({'modules': len(names), 'bad': bad}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["modules"] > 40 and result["bad"] == []


def family_name_uses(root: Path) -> list[str]:
    """``file:line`` of every quoted family name outside ``pose/families/`` that is not a setting being read."""
    found = []
    for path in sorted(p for top in ("pose", "tasks", "flows") for p in (root / top).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("pose/families/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FAMILY_NAME.search(line) and not any(r.search(line) for r in SETTING_READS):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_family_names_live_in_the_family_modules(tmp_path: Path) -> None:
    assert family_name_uses(ROOT) == []
    # the check can fail: a branch on a family name elsewhere is reported
    for top in ("pose", "tasks", "flows"):
        (tmp_path / top).mkdir()
    (tmp_path / "pose" / "cli.py").write_text('if model.family == "hourglass":\n    pass\n')
    assert family_name_uses(tmp_path) == ['pose/cli.py:1: if model.family == "hourglass":']


@pytest.mark.parametrize("module", ["pose.families.hourglass", "pose.families.openpose"])
def test_every_family_module_provides_the_interface(module: str) -> None:
    import dataclasses
    import importlib

    from pose.families import FAMILIES, Family

    mod = importlib.import_module(module)
    fam = Family.of(mod)
    assert FAMILIES[fam.name] == fam
    missing = [f.name for f in dataclasses.fields(Family) if getattr(fam, f.name) is None]
    assert missing == []
    model = fam.build(fam.arch())
    assert isinstance(model, fam.model_class)
    assert fam.infer_arch(model.state_dict())["family"] == fam.name      # its own layout is recognised
    assert fam.owns_outputs(fam.output_names(2))
