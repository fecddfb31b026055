"""The one reader of Hydra override keys, against Hydra's own override parser."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from dataprep.overrides import override_key

CASES = {
    "a.b=1": "a.b",
    "+a.b=1": "a.b",
    "++x=y": "x",
    "~a": "a",
    "~a.b=1": "a.b",
    "a.b=[1,2]": "a.b",
    "a='x=y'": "a",
    'run_dir="/tmp/a b=c"': "run_dir",
    "+zero=stage3": "zero",
    "model@m=tiny": "model@m",
    "hydra.run.dir=out": "hydra.run.dir",
    "a.b=": "a.b",
}


@pytest.mark.parametrize("override,key", CASES.items())
def test_override_key_names_what_hydra_reads(override, key):
    assert override_key(override) == key
    parsed = OverridesParser.create().parse_override(override)
    assert key == parsed.key_or_group + (f"@{parsed.package}" if parsed.package else "")
