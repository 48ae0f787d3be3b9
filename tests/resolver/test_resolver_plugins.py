"""Strategy plugins through the ``prodfs.strategies`` entry-point group.

The example plugin and its pyproject stanza are taken from docs/strategies.md
and installed as a real distribution (a dist-info directory on sys.path), so
the documentation is what is tested.
"""

from __future__ import annotations

import logging
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from prodfs.resolution import strategies
from prodfs.resolution.context import Context
from prodfs.resolution.resolver import resolve
from prodfs.resolution.strategies import UnknownStrategy, available, get_strategy, register
from tests.resolver.test_resolver_diamond import P1, P4, diamond

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"


def _block(marker: str, lang: str) -> str:
    text = DOC.read_text()
    at = text.index(marker)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, at)
    assert m is not None, f"no {lang} block after {marker} in {DOC}"
    return m.group(1)


def _install(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: modules plus a dist-info with entry points."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("[prodfs.strategies]\n" + "\n".join(lines) + "\n")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    strategies._reset_plugins()
    yield tmp_path
    strategies._reset_plugins()
    for name in set(sys.modules) - before:
        if name.startswith(("studio_", "broken_", "misnamed_", "usurper_")):
            del sys.modules[name]


def test_the_documented_example_plugin_is_found_by_name(plugin_path: Path) -> None:
    source = _block("<!-- example-plugin", "python")
    stanza = tomllib.loads(_block("<!-- example-entry-point", "toml"))
    eps = stanza["project"]["entry-points"]["prodfs.strategies"]
    (module,) = {v.split(":")[0] for v in eps.values()}
    _install(plugin_path, "studio_strategies", {module: source}, eps)

    assert "one_back" in available()
    assert type(get_strategy("one_back")).__name__ == "OneBack"
    # the diamond: p1 is asked for 1 and 2; one back from the highest is 1
    res = resolve(diamond(), Context(roots=(P4,), strategy="one_back"))
    c = res.choose(P1)
    assert c is not None and c.number == 1 and c.rule == "strategy:one_back"
    assert res.conflicts[0].strategy == "one_back" and res.errors == []


def test_entry_points_are_read_once_and_lazily(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = strategies.metadata.entry_points

    def counting(**kw):  # type: ignore[no-untyped-def]
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(strategies.metadata, "entry_points", counting)
    assert calls == []
    get_strategy("latest")
    get_strategy("highest")
    available()
    with pytest.raises(UnknownStrategy):
        get_strategy("nope")
    assert calls == [{"group": "prodfs.strategies"}]


def test_bad_plugins_are_logged_and_ignored(plugin_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = "from prodfs.resolution.strategies import Latest\nclass Fine(Latest):\n    name = 'studio_fine'\n"
    _install(plugin_path, "studio_plugins", {
        "studio_fine": good,
        "broken_mod": "raise ImportError('missing dependency')\n",
        "misnamed_mod": "from prodfs.resolution.strategies import Latest\nclass M(Latest):\n    name = 'other'\n",
        "usurper_mod": "from prodfs.resolution.strategies import Highest\nclass U(Highest):\n    name = 'latest'\n",
    }, {
        "studio_fine": "studio_fine:Fine",
        "broken": "broken_mod:Whatever",
        "misnamed": "misnamed_mod:M",
        "latest": "usurper_mod:U",
    })
    with caplog.at_level(logging.WARNING, logger="prodfs.resolution.strategies"):
        names = available()
    assert "studio_fine" in names and "broken" not in names and "misnamed" not in names
    assert type(get_strategy("latest")) is strategies.Latest  # a plugin cannot replace a built-in
    logged = caplog.text
    assert "broken" in logged and "missing dependency" in logged
    assert "misnamed" in logged and "'other'" in logged
    assert "built in" in logged


def test_unknown_name_lists_the_known_ones(plugin_path: Path) -> None:
    with pytest.raises(UnknownStrategy) as info:
        get_strategy("newest_first")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert str(err) == "unknown strategy 'newest_first'; known: highest, latest, lowest, nearest, strict"


def test_register_checks_the_class() -> None:
    class NoName:
        def choose(self, product, requests, env):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(TypeError):
        register(NoName)  # type: ignore[arg-type]

    class NoChoose:
        name = "no_choose"

    with pytest.raises(TypeError):
        register(NoChoose)  # type: ignore[arg-type]
    assert "no_choose" not in available()
