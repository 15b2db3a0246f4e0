"""pose.settings: typed settings from params mappings, errors naming the source and the dotted field."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pose.io import PoseDataError
from pose.settings import convert_fields, from_mapping, keyword_values


@dataclass(frozen=True)
class Inner:
    size: int = 4
    scale: float | None = None


@dataclass(frozen=True)
class Outer:
    name: str
    flag: bool = False
    shape: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    inner: Inner = Inner()
    table: dict[str, Inner] = field(default_factory=dict)
    free: dict = field(default_factory=dict)


def test_values_are_converted_and_defaults_come_from_the_dataclass() -> None:
    s = from_mapping(Outer, {"name": "a", "shape": [3, 4], "scales": [1, 2.5], "inner": {"scale": 2},
                             "table": {"x": {"size": 7}}, "free": {"any": [1, "b"]}}, "p.yaml", "sec")
    assert s == Outer(name="a", shape=(3, 4), scales=(1.0, 2.5), inner=Inner(scale=2.0), table={"x": Inner(size=7)},
                      free={"any": [1, "b"]})
    assert isinstance(s.inner.scale, float) and s.flag is False and from_mapping(Inner, None, "p", "i") == Inner()


@pytest.mark.parametrize("data, field_name, words", [
    ({"name": "a", "flag": "false"}, "sec.flag", "true or false"),          # a quoted boolean is not a boolean
    ({"name": "a", "inner": {"size": "abc"}}, "sec.inner.size", "integer"),
    ({"name": "a", "inner": {"size": True}}, "sec.inner.size", "integer"),  # YAML true is not 1
    ({"name": "a", "inner": {"scale": float("nan")}}, "sec.inner.scale", "finite"),
    ({"name": "a", "shape": [3]}, "sec.shape", "2 values"),
    ({"name": "a", "scales": "1.0"}, "sec.scales", "list"),
    ({"name": "a", "table": {"x": {"sise": 1}}}, "sec.table.x.sise", "unknown key"),
    ({"name": "a", "colour": 1}, "sec.colour", "unknown key"),
    ({"name": None}, "sec.name", "got None"),
    ({"name": 3}, "sec.name", "string"),
    ({}, "sec.name", "missing"),                                             # a required field is missing
])
def test_bad_values_name_the_file_and_the_field(data, field_name, words) -> None:
    with pytest.raises(PoseDataError) as err:
        from_mapping(Outer, data, "params.yaml", "sec")
    assert err.value.path == "params.yaml" and err.value.field == field_name
    assert words in str(err.value)


def test_keyword_values_follow_the_callee_annotations() -> None:
    def make(size: int = 368, sigma: float = 7.0, flip: bool = False) -> None:
        return None

    assert keyword_values(make, {"sigma": 7, "size": 96}, ("size", "sigma"), "p.yaml", "data") == {"sigma": 7.0,
                                                                                                "size": 96}
    assert keyword_values(make, None, ("size",), "p.yaml", "data") == {}
    with pytest.raises(PoseDataError, match="unknown key") as err:
        keyword_values(make, {"flip": True}, ("size", "sigma"), "p.yaml", "data")     # flip is not allowed here
    assert err.value.field == "data.flip"
    with pytest.raises(PoseDataError, match="integer") as err:
        keyword_values(make, {"size": 9.5}, ("size",), "p.yaml", "data")
    assert err.value.field == "data.size"


@dataclass(frozen=True)
class Checked:
    path: str
    size: int = 4
    inner: Inner = Inner()

    def check(self, source: str, prefix: str) -> None:
        if self.size < 1:
            raise PoseDataError(source, f"must be >= 1, got {self.size}", field=f"{prefix}.size")


@dataclass(frozen=True)
class Nests:
    checked: Checked | None = None


def test_check_runs_wherever_the_settings_are_read() -> None:
    assert from_mapping(Checked, {"path": "a"}, "p.yaml", "sec") == Checked("a")
    with pytest.raises(PoseDataError) as err:
        from_mapping(Checked, {"path": "a", "size": 0}, "p.yaml", "sec")
    assert err.value.field == "sec.size"
    with pytest.raises(PoseDataError) as err:                   # nested: the same check, the nested name
        from_mapping(Nests, {"checked": {"path": "a", "size": 0}}, "p.yaml", "top")
    assert err.value.field == "top.checked.size"


def test_keys_read_part_of_a_section() -> None:
    """A reader of some keys: only they are typed and required; an unread required field is None; the section's
    key names are still checked."""
    s = from_mapping(Checked, {"path": 5, "size": 3}, "p.yaml", "sec", keys=("size",))    # path is not read
    assert s.size == 3 and s.path is None
    with pytest.raises(PoseDataError, match="missing") as err:
        from_mapping(Checked, {"size": 3}, "p.yaml", "sec", keys=("path", "size"))
    assert err.value.field == "sec.path"
    with pytest.raises(PoseDataError, match="unknown key") as err:
        from_mapping(Checked, {"path": "a", "sise": 3}, "p.yaml", "sec", keys=("size",))
    assert err.value.field == "sec.sise"
    with pytest.raises(TypeError):                              # a reader naming a key the class lacks: a bug
        from_mapping(Checked, {}, "p.yaml", "sec", keys=("colour",))


def test_convert_fields_types_a_layer_under_its_own_name() -> None:
    assert convert_fields(Outer, {"flag": True, "inner": {"size": 2}}, "p.yaml", "sec.profiles.a") == {
        "flag": True, "inner": Inner(size=2)}
    with pytest.raises(PoseDataError) as err:
        convert_fields(Outer, {"inner": {"size": "2"}}, "p.yaml", "sec.profiles.a")
    assert err.value.field == "sec.profiles.a.inner.size"
    # a value built already passes through from_mapping unchanged
    assert from_mapping(Outer, {"name": "n", "inner": Inner(size=9)}, "p.yaml", "sec").inner == Inner(size=9)


def test_a_yaml_exponent_without_a_dot_is_explained() -> None:
    with pytest.raises(PoseDataError, match="1.0e-4") as err:
        from_mapping(Inner, {"scale": "1e-4"}, "p.yaml", "sec")      # PyYAML reads 1e-4 as a string
    assert err.value.field == "sec.scale"
