"""Shared pytest set-up: quiet TF, small thread pools, paths to real CT."""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# Real data lives in the repository (license notices beside the files): a clone runs every test.
REAL_CT = REPO / "liverzoo" / "data" / "demo"
REAL_DICOM = REPO / "tests" / "data" / "dicom"


@pytest.fixture(scope="session")
def shared_ct_dir():
    """The real CT volumes embedded in the package (liverzoo/data/demo, see its NOTICE)."""
    return REAL_CT


@pytest.fixture(scope="session")
def real_dicom_dir():
    """Real DICOM: a JPEG 2000 series, three uncompressed slices, a dcmqi SEG (see its README)."""
    return REAL_DICOM
