"""`losslab verify --junit PATH`: the reproduction check as JUnit XML, which CI systems
(GitHub Actions test reporters, GitLab, Jenkins) show as one test per scenario × variant.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from losslab.core.criteria import Check


def junit_xml(checks: list[Check], suite: str = "losslab verify") -> str:
    """One <testcase> per variant expectation (classname = the scenario, name = the
    variant); a miss is a <failure> whose message says observed vs expected."""
    failed = sum(not c.ok for c in checks)
    root = ET.Element("testsuites", name=suite, tests=str(len(checks)), failures=str(failed))
    ts = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(checks)), failures=str(failed), errors="0"
    )
    for c in checks:
        case = ET.SubElement(ts, "testcase", classname=c.scenario, name=c.variant, time="0")
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="expected", value=c.expected)
        ET.SubElement(props, "property", name="observed", value=c.observed)
        if not c.ok:
            message = f"observed {c.observed}; expected {c.expected}" + (f" ({c.why})" if c.why else "")
            failure = ET.SubElement(case, "failure", message=message, type="ExpectationNotMet")
            failure.text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
