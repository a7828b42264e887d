"""Everything is in pyproject.toml; this adds one build step: the message catalogs
(paygate/translations/*/LC_MESSAGES/messages.po) are compiled to the .mo files Flask-Babel reads, on every
`pip install` (wheel, sdist or editable), so that a fresh clone serves every language without a
manual step. The .mo files are not committed."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def compile_catalogs() -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    root = os.path.join(HERE, "paygate", "translations")
    for lang in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        po = os.path.join(root, lang, "LC_MESSAGES", "messages.po")
        if not os.path.exists(po):
            continue
        mo = po[:-3] + ".mo"
        with open(po, "rb") as source:
            catalog = read_po(source, locale=lang)
        with open(mo, "wb") as target:
            write_mo(target, catalog)


class BuildPyWithCatalogs(build_py):
    def run(self):
        compile_catalogs()
        self.__dict__.pop("data_files", None)  # list the .mo files just written too
        super().run()


setup(cmdclass={"build_py": BuildPyWithCatalogs})
