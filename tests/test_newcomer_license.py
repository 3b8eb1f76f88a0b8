"""The repository ships the licence its metadata declares (Apache-2.0).

pyproject said ``license = "Apache-2.0"`` with no LICENSE file: a wheel carried no licence text.
The file is the unmodified text of https://www.apache.org/licenses/LICENSE-2.0.txt (its
SHA-256 below), so a hospital's licence review can compare it byte for byte.
"""

from __future__ import annotations

import hashlib
import tomllib

from .conftest import ROOT

#: SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt (11,358 bytes).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_unmodified_apache_2_0_text() -> None:
    text = (ROOT / "LICENSE").read_bytes()
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256
    assert b"END OF TERMS AND CONDITIONS" in text and b"Version 2.0, January 2004" in text


def test_pyproject_names_the_license_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
