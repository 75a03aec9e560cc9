"""Sparse rows times a dense table, without building a ``scipy.sparse`` matrix.

Every worker step pools token rows this way (the embedding, the verifier's sentence vectors,
new words' vectors): a (texts x vocabulary) sparse matrix times the (vocabulary x dim) token
table. Constructing the ``csr_matrix`` checked its arrays for ~35 us per call, as long as the
product itself for a batch of 16 texts; this calls the same C loop directly, so the result is
bit for bit the one ``csr_matrix((data, indices, indptr)) @ table`` gives (a test checks).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.sparse import _sparsetools

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def rows_times_table(indptr: I64, indices: I64, data: F32, table: F32) -> F32:
    """(len(indptr) - 1, dim): row r is the sum of ``data[k] * table[indices[k]]`` over
    ``k`` in ``indptr[r]:indptr[r + 1]``, accumulated in that order in float32."""
    vocab, dim = table.shape
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    data = np.ascontiguousarray(data, dtype=np.float32)
    # The C loop does not check bounds (scipy's constructor did): a bad id must not read
    # outside the table. Viewed as unsigned, a negative id is huge: one reduction checks both ends.
    if len(indices) and int(indices.view(np.uint64).max()) >= vocab:
        raise IndexError("token id outside the table")
    if len(data) != len(indices) or int(indptr[-1]) != len(indices):
        raise ValueError("indptr, indices and data disagree")
    out = np.zeros((len(indptr) - 1, dim), dtype=np.float32)
    flat = np.ascontiguousarray(table, dtype=np.float32).reshape(-1)
    _sparsetools.csr_matvecs(len(indptr) - 1, vocab, dim, indptr, indices, data, flat, out.reshape(-1))
    return out
