"""Maps the fixed top-level folders onto the one `agentctl.` import namespace.

pyproject.toml cannot prefix discovered subpackages, so this computes the list: `serving/` becomes
`agentctl.serving` (editable installs included) and nothing bare reaches site-packages.
"""

from setuptools import find_packages, setup

ROOTS = ("ctl", "collectors", "dashboard", "serving", "playbooks")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    package_dir[f"agentctl.{root}"] = root
    packages.append(f"agentctl.{root}")
    packages += [f"agentctl.{root}.{sub}" for sub in find_packages(root)]

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
            "py.typed",
            "templates/*.j2",
            "templates/**/*.j2",
            "static/*",
            "data/*.xz",
            "data/*.md",
            "recordings/*",
        ]
    },
    include_package_data=True,
)
