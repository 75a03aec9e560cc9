"""The direct sparse product is bit for bit scipy's csr_matrix product."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from cache.sparse import rows_times_table


def test_equals_csr_matrix_product_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((500, 24)).astype(np.float32)
    lens = np.asarray([3, 0, 7, 1, 12, 0], dtype=np.int64)  # empty rows and repeated ids included
    indptr = np.concatenate([[0], np.cumsum(lens)])
    indices = rng.integers(0, 500, int(lens.sum()))
    indices[:2] = 7
    data = rng.random(len(indices)).astype(np.float32)
    want = np.asarray(csr_matrix((data, indices, indptr), shape=(len(lens), 500)) @ table)
    got = rows_times_table(indptr, indices, data, table)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert not got[1].any() and not got[5].any()


def test_rejects_ids_outside_the_table() -> None:
    table = np.ones((10, 4), dtype=np.float32)
    with pytest.raises(IndexError):
        rows_times_table(np.asarray([0, 1]), np.asarray([10]), np.ones(1, np.float32), table)
    with pytest.raises(ValueError):
        rows_times_table(np.asarray([0, 2]), np.asarray([1]), np.ones(1, np.float32), table)
