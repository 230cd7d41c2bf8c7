"""Install the collections of collections/requirements.yml without Galaxy: copy them out
of the PyPI `ansible` bundle (a wheel that carries about fifty collections), at exactly
the listed versions, into the interpreter's site-packages/ansible_collections, where
ansible-core, ansible-lint and molecule all look.

    python collections/install_offline.py WHEEL   # ansible-*.whl, from `pip download`
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main(wheel: str) -> int:
    wanted = yaml.safe_load((HERE / "requirements.yml").read_text())["collections"]
    target = Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        for c in wanted:
            namespace, name = c["name"].split(".")
            prefix = f"ansible_collections/{namespace}/{name}/"
            manifest = json.loads(whl.read(prefix + "MANIFEST.json"))["collection_info"]
            if manifest["version"] != str(c["version"]):
                print(f"{c['name']}: the bundle has {manifest['version']}, "
                      f"requirements.yml wants {c['version']}", file=sys.stderr)
                return 1
            dest = target / namespace / name
            shutil.rmtree(dest, ignore_errors=True)
            for member in (n for n in names if n.startswith(prefix) and not n.endswith("/")):
                out = target.parent / member
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(whl.read(member))
            print(f"{c['name']} {manifest['version']} -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
