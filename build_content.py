"""Build step that puts the service's content files into the wheel (pyproject.toml, cmdclass).

The card files, the fixture set and the two documents the knowledge check cites stay at the top
of the repository (cards/, fixtures/, docs/), where the project keeps them. An installed wheel
has no repository beside it, so this step copies them under cds_service/_content/ in the
wheel, where cds_service.settings.content_dir finds them. An editable install needs no copy:
the package is the repository's own, and the folders are beside it.

Only what runs needs: the fixtures' requests and expected cards (the preview page, `invoke`,
`check-knowledge`), not the golden responses or the generator.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
TARGET = Path("cds_service", "_content")
# (folder of the repository, file pattern): copied to the same folder under TARGET.
CONTENT = (
    ("cards", "*.yaml"),
    ("fixtures/patient-view", "*.json"),
    ("fixtures/order-select", "*.json"),
    ("fixtures/order-sign", "*.json"),
    ("docs", "sources.md"),
    ("docs", "codes.md"),
)


def content_files(root: Path = ROOT) -> list[Path]:
    """The content files of the repository at `root`, relative to it."""
    found = [
        path.relative_to(root)
        for folder, pattern in CONTENT
        for path in sorted((root / folder).glob(pattern))
        if path.is_file()
    ]
    if not any(path.parts[0] == "cards" for path in found):
        raise FileNotFoundError(f"no card files in {root / 'cards'}: the wheel would not run")
    return found


class BuildPy(build_py):
    """build_py, then the content files into the build folder (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for relative in content_files():
            target = Path(self.build_lib, TARGET, relative)
            self.mkpath(str(target.parent))
            self.copy_file(str(ROOT / relative), str(target))
