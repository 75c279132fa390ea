"""Reads a table the frames pipeline stored (tests/src/bin/frames.rs) with
pyarrow and checks every value against the rule that made it: a Parquet
artifact must open unchanged in the Python tools people use."""

import sys

import pyarrow
import pyarrow.parquet as pq

path, rows = sys.argv[1], int(sys.argv[2])
t = pq.read_table(path)
assert t.num_rows == rows, (t.num_rows, rows)
assert t.column_names == ["x", "n", "s", "c"], t.column_names
x, n, s, c = (t.column(name).to_pylist() for name in t.column_names)
for i in range(rows):
    assert x[i] == (None if i % 7 == 3 else i / 4.0), (i, x[i])
    assert n[i] == i - 5, (i, n[i])
    assert s[i] == f"id-{i % 5}", (i, s[i])
    assert c[i] == ["red", "green", "blue"][i % 3], (i, c[i])
assert str(t.schema.field("c").type).startswith("dictionary<values=string"), t.schema.field("c").type
print(f"pyarrow {pyarrow.__version__}: {rows} rows read back, every value as written")
