"""The one registry style (spmi/registry.py) of methods, models and datasets."""

import importlib
import sys

import pytest

from spmi.data import DATASETS, DataError, get_info
from spmi.methods import METHODS, get_method, list_methods, register_method
from spmi.models import MODELS, create_model
from spmi.registry import Registry


def test_register_get_and_names():
    r: Registry[int] = Registry("thing")
    assert r.register("b")(2) == 2 and r.add("a", 1) == 1
    assert r.names() == list(r) == ["a", "b"] and len(r) == 2 and r.values() == [1, 2]
    assert dict(r) == {"a": 1, "b": 2} and r.items() == [("a", 1), ("b", 2)]
    assert "a" in r and "c" not in r and ["a"] not in r and r["b"] == 2 and r.get("a") == 1
    with pytest.raises(ValueError, match="^unknown thing 'c'; choose one of: a, b$"):
        r.get("c")
    with pytest.raises(ValueError, match=r"^unknown thing \['a'\]; choose one of: a, b$"):
        r.get(["a"])
    with pytest.raises(KeyError):
        r["c"]
    with pytest.raises(ValueError, match="^thing 'a' is already registered; register the new one under another name$"):
        r.add("a", 3)
    assert r.get("a") == 1


class WidgetError(Exception):
    pass


def test_error_type_and_quoting_are_the_registrys():
    r: Registry[int] = Registry("widget", error=WidgetError, quote=lambda n: f"<{n}>")
    with pytest.raises(WidgetError, match="^unknown widget <x>; choose one of: $"):
        r.get("x")
    r.add("y", 1)
    with pytest.raises(ValueError, match="^widget <y> is already registered;"):
        r.add("y", 1)


def test_a_package_is_imported_before_the_first_lookup(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_11c"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from spmi.registry import Registry\nR = Registry('plugin', __name__)\n")
    (pkg / "one.py").write_text("from plugins_11c import R\nR.add('one', 1)\n")
    (pkg / "two.py").write_text("from plugins_11c import R\nR.register('two')(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = importlib.import_module("plugins_11c").R
        assert "plugins_11c.one" not in sys.modules  # nothing imported before a lookup
        assert r.names() == ["one", "two"] and r.get("two") == 2
    finally:
        for name in ("plugins_11c", "plugins_11c.one", "plugins_11c.two"):
            sys.modules.pop(name, None)


def test_unknown_names_keep_their_messages():
    with pytest.raises(ValueError, match=f"^unknown method 'x'; choose one of: {', '.join(list_methods())}$"):
        get_method("x")
    with pytest.raises(ValueError, match=f"^unknown model 'x'; choose one of: {', '.join(MODELS.names())}$"):
        create_model("x", 10, 1)
    with pytest.raises(DataError, match=f"^unknown dataset 'x'; choose one of: {', '.join(DATASETS.names())}$"):
        get_info("x")
    # methods quote with repr, models always with single quotes (as before the shared registry)
    with pytest.raises(ValueError, match="^unknown method None;"):
        get_method(None)
    with pytest.raises(ValueError, match="^unknown model 'None';"):
        create_model(None, 10, 1)


def test_a_second_method_of_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS.items()))  # items() loads the registry first
    original = get_method("spmi")

    class Impostor(original):
        pass

    with pytest.raises(ValueError, match="^method 'spmi' is already registered by spmi.methods.spmi.SPMI; register"):
        register_method(Impostor)
    assert get_method("spmi") is original
    Impostor.name = "spmi_copy"
    assert register_method(Impostor) is Impostor and get_method("spmi_copy") is Impostor


def test_a_module_that_fails_to_import_fails_every_lookup(tmp_path, monkeypatch):
    """Not a registry silently missing the entries of a module that failed once."""
    pkg = tmp_path / "plugins_11c_bad"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from spmi.registry import Registry\nR = Registry('plugin', __name__)\n")
    (pkg / "broken.py").write_text("raise ImportError('needs a package that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        r = importlib.import_module("plugins_11c_bad").R
        for _ in range(2):
            with pytest.raises(ImportError, match="not installed"):
                r.names()
    finally:
        for name in ("plugins_11c_bad", "plugins_11c_bad.broken"):
            sys.modules.pop(name, None)
