"""`losslab verify --junit`: the reproduction check as JUnit XML a CI system reads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from losslab.core.criteria import Check
from losslab.report.junit import junit_xml
from projects import ROOT, run_cli


def test_verify_writes_one_passing_test_case_per_variant(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    r = run_cli(ROOT, "verify", "--junit", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    suite = ET.parse(out).getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == sum(1 for _ in (ROOT / "conf" / "variant").glob("*/*.yaml"))
    assert ("linear", "broken") in {(c.get("classname"), c.get("name")) for c in cases}
    assert suite.get("failures") == "0" and not suite.findall(".//failure")


def test_a_missed_expectation_is_a_failure_saying_observed_vs_expected() -> None:
    checks = [
        Check("linear", "broken", "diverged", "diverged 5/5", 1.0, 1.0, True),
        Check("linear", "adam", "converged", "rising 3/5, converged 2/5", 0.4, 1.0, False, "only 40%"),
    ]
    root = ET.fromstring(junit_xml(checks))
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    (failure,) = root.findall(".//testcase[@name='adam']/failure")
    assert failure.get("message") == "observed rising 3/5, converged 2/5; expected converged (only 40%)"
