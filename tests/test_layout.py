"""The package layout's loose ends that no import checks: files named by path."""

from __future__ import annotations

from vpt_ray.pipeline import resume


def test_the_resume_keys_hash_code_files_that_exist():
    """The cache keys hash the feature / search / ensemble code by file path; a path left behind
    by a move would hash as empty and stop invalidating the cache when that code changes."""
    for files in (resume.FEATURE_CODE, resume.SEARCH_CODE, resume.ENSEMBLE_CODE):
        for name in files:
            assert (resume.PACKAGE / name).is_file(), f"{name} (under {resume.PACKAGE})"
