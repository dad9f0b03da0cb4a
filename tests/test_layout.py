"""The package layout's loose ends that no import checks: files named by path."""

from __future__ import annotations

from vpt_ray.pipeline import resume


def test_the_resume_keys_hash_code_files_that_exist():
    """The cache keys hash the feature / search / ensemble code by file path; a path left behind
    by a move would hash as empty and stop invalidating the cache when that code changes."""
    for files in (resume.FEATURE_CODE, resume.SEARCH_CODE, resume.ENSEMBLE_CODE):
        for name in files:
            assert (resume.PACKAGE / name).is_file(), f"{name} (under {resume.PACKAGE})"


STAGE_PACKAGES = (
    "core",
    "data",
    "features",
    "model",
    "backtest",
    "validation",
    "report",
    "pipeline",
)
MAX_MODULE_LINES = 520  # the "no module over ~500 lines", with a little slack


def test_each_stage_package_says_what_it_owns():
    import importlib

    for name in STAGE_PACKAGES:
        doc = importlib.import_module(f"vpt_ray.{name}").__doc__ or ""
        assert len(doc.split()) >= 20, f"vpt_ray/{name}/__init__.py: no paragraph on what it owns"


def test_no_module_grows_past_the_limit():
    too_long = {
        str(p.relative_to(resume.PACKAGE)): n
        for p in resume.PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these along their seams: {too_long}"


def test_the_public_entry_modules_keep_their_paths():
    """`python -m vpt_ray.X` paths the README and the seed's scripts use: each still has main()."""
    import importlib

    for path in ("phase", "train", "optimize", "audit", "compare", "html_report", "__main__"):
        assert callable(importlib.import_module(f"vpt_ray.{path}").main), path
    for pkg in ("backtest", "data"):  # `python -m vpt_ray.backtest` / `vpt_ray.data`
        assert callable(importlib.import_module(f"vpt_ray.{pkg}.__main__").main), pkg
