"""Maps the fixed top-level folders onto the one `agentctl.` import namespace.

pyproject.toml cannot prefix discovered subpackages, so this computes the list: `serving/` becomes
`agentctl.serving` (editable installs included) and nothing bare reaches site-packages.

Data folders (`templates/`, `static/`, `data/`) are listed as packages too: Python can import any
folder with an identifier name, and setuptools warns about (and may one day drop) one that holds
package data but is absent from `packages`. Folders whose name is no identifier (`cloud-init/`)
cannot be packages; their files ride on the parent's `package_data` globs.
"""

from setuptools import find_namespace_packages, setup

ROOTS = ("ctl", "collectors", "dashboard", "serving", "playbooks")


def _subpackages(root: str) -> list[str]:
    found = find_namespace_packages(root, exclude=["__pycache__", "*.__pycache__"])
    return [name for name in found if all(part.isidentifier() for part in name.split("."))]


packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    package_dir[f"agentctl.{root}"] = root
    packages.append(f"agentctl.{root}")
    packages += [f"agentctl.{root}.{sub}" for sub in _subpackages(root)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={
        "": [
            "*.yaml",
            "*.yml",
            "*.j2",
            "*.ini",
            "*.mako",
            "*.tcss",
            "*.html",
            "*.css",
            "*.xz",
            "*.md",
            "py.typed",
            "templates/**/*.j2",
            "static/*",
        ],
        # recorded GPU outputs, byte-identical with their provenance (SOURCES.tsv)
        "agentctl.collectors.gpu.recordings": ["*"],
    },
    include_package_data=True,
)
