"""The demo show as built on disk: determinism, history, and what its stages compose.

Stages are opened from directories laid out as a mount root would be
(``ROOT/<PRI>/`` = the version a context selects), so the versionless
relative paths between products are exercised exactly as through ProdFS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from prodfs_demo import DemoPlan, Show, build, check_stage, texture_bytes
from tests.demo.conftest import START, Arrange, arrange_root, open_layer

MODEL = "spies:asset:walter-model"
LOOK = "spies:asset:walter-look"
TEX = "spies:asset:walter-tex"
RIG = "spies:asset:walter-rig"
LAY = "spies:100:10-lay:main"
ANIM = "spies:100:10-anim:walter"
LGT = "spies:100:10-lgt:walter"


def _tree(top: Path) -> dict[str, str]:
    return {
        str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(top.rglob("*")) if p.is_file()
    }


def _closure(plan: DemoPlan, ref: str) -> dict[str, set[int]]:
    """Every version reached from ``ref`` through the published dependencies (from the steps)."""
    deps = {s.ref: s.dependencies for s in plan.steps}
    reached: dict[str, set[int]] = defaultdict(set)
    todo = [ref]
    while todo:
        r = todo.pop()
        pri, _, n = r.rpartition("@")
        if int(n) in reached[pri]:
            continue
        reached[pri].add(int(n))
        todo.extend(deps[r])
    return reached


# -- the files ---------------------------------------------------------------------------------


def test_build_is_deterministic(plan: DemoPlan, tmp_path: Path) -> None:
    again = build(tmp_path / "again", start=START)
    assert _tree(again.workdir) == _tree(plan.workdir)
    strip = lambda j: {k: v for k, v in j.items() if k not in ("workdir", "steps")}  # noqa: E731
    assert strip(again.to_json()) == strip(plan.to_json())
    assert [(s.ref, s.at, s.dependencies, s.labels, s.message) for s in again.steps] == [
        (s.ref, s.at, s.dependencies, s.labels, s.message) for s in plan.steps
    ]
    # another start moves the history, not the content
    later = build(tmp_path / "later", start=START + dt.timedelta(days=3))
    assert _tree(later.workdir) == _tree(plan.workdir)
    assert [s.at - dt.timedelta(days=3) for s in later.steps] == [s.at for s in plan.steps]


def test_rebuild_in_place_replaces_stale_files(tmp_path: Path) -> None:
    first = build(tmp_path, start=START)
    stray = first.directory(MODEL, 1) / "stray.txt"
    stray.write_text("left over")
    again = build(tmp_path, start=START)
    assert not stray.exists()
    assert [f.path for f in again.products[MODEL].versions[1].files] == ["model.usdc"]


def test_files_are_recorded_as_written(plan: DemoPlan) -> None:
    for pri, product in plan.products.items():
        for n, version in product.versions.items():
            top = plan.directory(pri, n)
            assert {f.path: f.sha256 for f in version.files} == _tree(top)
            assert (top / product.layer).is_file()
            assert all(f.size == (top / f.path).stat().st_size for f in version.files)


def test_texture_package_sits_next_to_its_layer(plan: DemoPlan) -> None:
    v1, v2 = (plan.directory(TEX, n) for n in (1, 2))
    assert sorted(p.name for p in (v1 / "textures").iterdir()) == ["walter_diffuse.png", "walter_normal.png"]
    assert (v2 / "textures" / "walter_spec.png").read_bytes() == texture_bytes(TEX, 2, "walter_spec.png")
    assert (v1 / "textures" / "walter_diffuse.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # the diffuse map changes, the normal map does not (one blob in the store)
    assert (v1 / "textures/walter_diffuse.png").read_bytes() != (v2 / "textures/walter_diffuse.png").read_bytes()
    assert (v1 / "textures/walter_normal.png").read_bytes() == (v2 / "textures/walter_normal.png").read_bytes()


def test_layers_point_at_other_products_by_versionless_relative_paths(plan: DemoPlan) -> None:
    lgt = (plan.directory(LGT, 2) / "walter.usda").read_text()
    assert f"@../{ANIM}/anim.usda@" in lgt and f"@../{LOOK}/look.usda@" in lgt
    assert f"@../{MODEL}/model.usdc@" in (plan.directory(LOOK, 1) / "look.usda").read_text()
    for pri, product in plan.products.items():
        for n in product.versions:
            for layer in plan.directory(pri, n).glob("*.usda"):
                text = layer.read_text()
                assert "@/" not in text, f"{layer}: absolute path"
                assert "@" + "../" in text or not plan.products[pri].versions[n].arcs
    model = plan.directory(MODEL, 1) / "model.usdc"
    assert model.read_bytes().startswith(b"PXR-USDC"), "the model must be a binary crate layer"


def test_build_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        build(tmp_path, start=dt.datetime(2024, 3, 4))
    with pytest.raises(ValueError, match="absolute"):
        build(tmp_path, start=START, mount_root="p")
    with pytest.raises(ValueError, match="scale"):
        build(tmp_path, start=START, scale=0)
    assert not any(tmp_path.iterdir()), "a refused build writes nothing"


# -- the history -------------------------------------------------------------------------------


def test_history_is_publishable_in_step_order(plan: DemoPlan) -> None:
    published: dict[str, dt.datetime] = {}
    newest: dict[str, tuple[int, dt.datetime]] = {}
    for s in plan.steps:
        n, at = newest.get(s.pri, (0, START - dt.timedelta(seconds=1)))
        assert s.number == n + 1, f"{s.ref}: numbers must follow publication order"
        assert s.at > at, f"{s.ref}: times must strictly increase per product"
        for dep in s.dependencies:
            assert dep in published and published[dep] <= s.at, f"{s.ref}: {dep} not published before"
        assert s.directory == plan.directory(s.pri, s.number) and s.directory.is_dir()
        published[s.ref] = s.at
        newest[s.pri] = (s.number, s.at)
    assert all(s.at >= START for s in plan.steps)
    assert [s.at for s in plan.steps] == sorted(s.at for s in plan.steps)


def test_history_spreads_over_days_so_pins_differ(plan: DemoPlan) -> None:
    days = {s.at.date() for s in plan.steps}
    assert len(days) >= 3
    assert all(len(p.versions) >= 2 for p in plan.products.values())
    pins = plan.pins()
    assert pins["day0"] == START + dt.timedelta(days=1, microseconds=-1)
    selections = [plan.selection(at) for at in pins.values()] + [plan.selection()]
    assert len({json.dumps(s, sort_keys=True) for s in selections}) >= 5
    # day 0 sees only the first assets: nothing of the shots exists yet
    assert set(plan.selection(pins["day0"])) == {TEX, MODEL, RIG}


def test_dependencies_mirror_the_layers_and_contain_a_diamond(plan: DemoPlan) -> None:
    for pri, product in plan.products.items():
        for version in product.versions.values():
            assert sorted(d.rpartition("@")[0] for d in version.dependencies) == sorted(version.arcs)
    diamonds = {
        s.ref: pri for s in plan.steps for pri, ns in _closure(plan, s.ref).items() if len(ns) > 1
    }
    assert diamonds.get(f"{LGT}@2") == MODEL
    assert _closure(plan, f"{LGT}@2")[MODEL] == {1, 2}  # anim@2 -> rig@1 -> model@1; look@2 -> model@2
    assert {d["version"] for d in plan.diamonds()} == set(diamonds)


def test_labels_are_set_and_moved(plan: DemoPlan) -> None:
    history: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in plan.label_moves:
        history[(m.pri, m.label)].append(m.number)
    assert {label for _, label in history} == {"published", "approved"}
    assert any(len(set(ns)) > 1 for ns in history.values()), "some label must move"
    day3 = plan.pins()["day3"]
    assert plan.labels(day3)[LGT] == {"published": 2, "approved": 2}
    assert plan.labels()[LGT] == {"published": 3, "approved": 3}  # approved moved after the history
    assert [m.label for m in plan.moves] and all(m.at is None for m in plan.moves)


# -- composition -------------------------------------------------------------------------------


def _check_context(plan: DemoPlan, arrange: Arrange, root: Path, selection: dict[str, int]) -> None:
    arrange(root, selection)
    for pri in selection:
        problems = check_stage(open_layer(plan, root, pri), plan.compose(pri, selection))
        assert problems == [], f"{pri} in {root.name}: {problems}"


@pytest.mark.parametrize("context", ["latest", "day1", "day2", "day3", "day4", "day7", "prefer-approved"])
def test_every_layer_composes_its_expectations(plan: DemoPlan, arrange: Arrange, tmp_path: Path,
                                               context: str) -> None:
    if context == "latest":
        selection = plan.selection()
    elif context == "prefer-approved":
        selection = plan.selection(prefer=("approved", "published"))
    else:
        selection = plan.selection(plan.pins()[context])
    _check_context(plan, arrange, tmp_path / context, selection)


def test_documented_values_differ_between_contexts(plan: DemoPlan, arrange: Arrange, tmp_path: Path) -> None:
    """The examples of docs/demo.md, through real composition (the .usdc model included)."""
    latest = open_layer(plan, arrange(tmp_path / "latest", plan.selection()), LGT)
    day3 = open_layer(plan, arrange(tmp_path / "day3", plan.selection(plan.pins()["day3"])), LGT)
    day2 = open_layer(plan, arrange(tmp_path / "day2", plan.selection(plan.pins()["day2"])), LGT)

    def value(stage, path: str, attr: str):  # noqa: ANN001, ANN202
        return stage.GetPrimAtPath(path).GetAttribute(attr).Get()

    assert value(latest, "/walter", "demo:lgt") == f"{LGT}@4"
    assert value(day3, "/walter", "demo:lgt") == f"{LGT}@2"
    assert value(day2, "/walter", "demo:lgt") == f"{LGT}@1"
    # a prim that only model@3 has (the .usdc layer, through rig and layout)
    assert latest.GetPrimAtPath("/walter/geo/hat").IsValid()
    assert not day3.GetPrimAtPath("/walter/geo/hat").IsValid()
    assert value(day3, "/walter/geo/body", "radius") == 1.5
    # the look's variant: gold by look@2 on day 3; lgt@4 selects gold over look@3's blue
    assert day3.GetPrimAtPath("/walter").GetVariantSet("look").GetVariantSelection() == "gold"
    day1_look = open_layer(plan, arrange(tmp_path / "day1", plan.selection(plan.pins()["day1"])), LOOK)
    assert day1_look.GetPrimAtPath("/walter").GetVariantSet("look").GetVariantSelection() == "red"
    assert value(day1_look, "/walter/mtl/body/surface", "inputs:diffuseColor")[0] == pytest.approx(0.8)
    assert list(value(day2, "/walter", "xformOp:translate")) == [0.0, 0.0, 0.0]
    assert list(value(day3, "/walter", "xformOp:translate")) == [2.0, 0.0, 0.0]
    assert value(latest, "/lights/key", "inputs:intensity") == pytest.approx(2.0)
    assert value(day3, "/walter/mtl/textures", "resolution") == "2k"
    diffuse = value(day3, "/walter/mtl/textures", "diffuse")
    assert Path(diffuse.resolvedPath).read_bytes() == texture_bytes(TEX, 2, "walter_diffuse.png")


def test_each_version_composes_with_its_own_dependencies(plan: DemoPlan, tmp_path: Path) -> None:
    for pri, product in plan.products.items():
        for n in product.versions:
            selection = plan.deps_selection(pri, n)
            root = arrange_root(plan.directory, tmp_path / f"{pri}@{n}", selection)
            problems = check_stage(open_layer(plan, root, pri), plan.expected[pri][n])
            assert problems == [], f"{pri}@{n}: {problems}"
    # the diamond resolves to the highest model
    assert plan.deps_selection(LGT, 2)[MODEL] == 2
    assert plan.expected[MODEL][2]["/walter/geo/body.radius"] == 1.5
    assert plan.expected[MODEL][1]["/walter/geo/body.radius"] == 1.0
    assert plan.expected[MODEL][3]["/walter/geo/hat"] is True


def test_check_stage_reports_what_differs(plan: DemoPlan, arrange: Arrange, tmp_path: Path) -> None:
    root = arrange(tmp_path / "latest", plan.selection())
    stage = open_layer(plan, root, LGT)
    wrong = plan.compose(LGT, plan.selection(plan.pins()["day3"]))
    problems = check_stage(stage, wrong)
    assert any(p.startswith("/walter/geo/hat:") for p in problems)
    assert any(p.startswith("/walter.demo:lgt:") for p in problems)
    # a product missing from the root is a composition error, not a silent pass
    broken = arrange_root(plan.directory, tmp_path / "broken",
                          {k: v for k, v in plan.selection().items() if k != MODEL})
    problems = check_stage(open_layer(plan, broken, LGT), plan.compose(LGT, plan.selection()))
    assert any("composition error" in p for p in problems)
    assert any(p.startswith("/walter/geo/body.radius:") for p in problems)


def test_absolute_paths_under_a_mount_root(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    plan = build(tmp_path / "work", start=START, mount_root=str(root))
    text = (plan.directory(LGT, 1) / "walter.usda").read_text()
    assert f"@{root}/{ANIM}/anim.usda@" in text and "@../" not in text
    selection = plan.selection()
    arrange_root(plan.directory, root, selection)
    for pri in selection:
        assert check_stage(open_layer(plan, root, pri), plan.compose(pri, selection)) == []
    # the same layer opened from elsewhere still reads the mount root
    elsewhere = arrange_root(plan.directory, tmp_path / "elsewhere", {LGT: selection[LGT]})
    assert check_stage(open_layer(plan, elsewhere, LGT), plan.compose(LGT, selection)) == []


def test_scale_adds_shots_built_alike(tmp_path: Path) -> None:
    plan = build(tmp_path / "work", start=START, scale=2)
    shot20 = {"spies:100:20-lay:main", "spies:100:20-anim:walter", "spies:100:20-lgt:walter"}
    assert shot20 <= set(plan.products) and len(plan.products) == 10
    selection = plan.selection(plan.pins()["day4"])
    root = arrange_root(plan.directory, tmp_path / "root", selection)
    stage = open_layer(plan, root, "spies:100:20-lgt:walter")
    assert check_stage(stage, plan.compose("spies:100:20-lgt:walter", selection)) == []
    assert plan.labels()["spies:100:20-lgt:walter"]["approved"] == 3


def test_json_form_round_trips(plan: DemoPlan) -> None:
    text = json.dumps(plan.to_json())
    raw = json.loads(text)
    assert raw["products"][MODEL]["versions"]["2"]["expected"]["/walter/geo/body.radius"] == 1.5
    assert raw["contexts"]["day3"]["selection"][LGT] == 2
    again = Show.from_json(raw)
    assert again.expected == plan.expected
    assert again.contexts() == plan.contexts()
    assert {k: v for k, v in again.to_json().items()} == {
        k: v for k, v in raw.items() if k not in ("workdir", "steps")
    }
    with pytest.raises(ValueError, match="format"):
        Show.from_json({**raw, "format": 99})


def test_built_files_have_fixed_modes(plan: DemoPlan) -> None:
    for top in (plan.directory(TEX, 2), plan.directory(LGT, 1)):
        for dirpath, _, filenames in os.walk(top):
            assert os.stat(dirpath).st_mode & 0o777 == 0o755
            for name in filenames:
                assert os.stat(Path(dirpath, name)).st_mode & 0o777 == 0o644


# -- docs/demo.md describes what the generator does ----------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "demo.md"
SHORT = {TEX: "tex", MODEL: "model", RIG: "rig", LOOK: "look", LAY: "lay", ANIM: "anim", LGT: "lgt"}


def _doc_table(first_header: str) -> list[list[str]]:
    rows, inside = [], False
    for line in DOC.read_text().splitlines():
        if line.startswith(f"| {first_header} |"):
            inside = True
            continue
        if inside and line.startswith("|---"):
            continue
        if inside and line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif inside:
            break
    assert rows, f"docs/demo.md has no table starting with {first_header!r}"
    return rows


def test_doc_history_table_matches_the_plan(plan: DemoPlan) -> None:
    documented = []
    for when, version, deps, labels, _ in _doc_table("day hour"):
        day, hour = when.split()
        documented.append((int(day), hour, version, sorted(filter(None, deps.split(", "))),
                           sorted(filter(None, labels.split(", ")))))

    def short(ref: str) -> str:
        pri, _, n = ref.rpartition("@")
        return f"{SHORT[pri]}@{n}"

    actual = [((s.at - START).days, s.at.strftime("%H:%M"), short(s.ref),
               sorted(short(d) for d in s.dependencies), sorted(s.labels)) for s in plan.steps]
    assert documented == actual


def test_doc_context_table_matches_the_plan(plan: DemoPlan) -> None:
    columns = [TEX, MODEL, RIG, LOOK, LAY, ANIM, LGT]
    contexts = plan.contexts()
    rows = _doc_table("context")
    assert [r[0] for r in rows] == list(contexts)
    for name, *cells in rows:
        selection = contexts[name]["selection"]
        assert cells == [str(selection.get(pri, "-")) for pri in columns], name


def test_demo_script_parses_its_options_before_installing_anything() -> None:
    script = DOC.parents[1] / "scripts" / "demo.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--no-mount" in shown.stdout
    refused = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "unknown option: --bogus" in refused.stderr
