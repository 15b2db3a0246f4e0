"""pose.settings: typed settings from params mappings, errors naming the source and the dotted field."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pose.io import PoseDataError
from pose.settings import from_mapping, keyword_values


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
    ({}, "sec", "name"),                                                     # a required field is missing
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
