"""Tidy tables from a results file (``mistfast export results.nc --csv|--parquet``).

One row per configuration point (axis coordinates, derived inputs and every summary variable as
columns; a variable over a small extra dimension, such as rejections by reason or per-client
utilisation, becomes one column per label, ``name[label]``), or with ``per_request`` one row per
request. Units are in the column names (``ttft_p99_ms``) and, for Parquet, in the column metadata.
"""
from __future__ import annotations

from pathlib import Path

FORMATS = ("csv", "parquet")
_POINT_EXTRA_DIMS = ("reject_reason", "left_out_reason", "client", "stage_kind", "resource", "quantile")


def _point_dims(ds) -> list[str]:
    """Dims that index configuration points: everything but the per-variable extra dims."""
    return [d for d in ds.dims if d not in _POINT_EXTRA_DIMS and d not in ("request", "step")]


def points_table(ds):
    """One row per configuration point (a single run gives one row)."""
    import pandas as pd
    pdims = _point_dims(ds)
    plain = [k for k, v in ds.data_vars.items() if set(v.dims) <= set(pdims)]
    if pdims:
        df = ds[plain].to_dataframe().reset_index()
        if "point" in df.columns and "point" not in ds.coords:
            df = df.drop(columns="point")
    else:
        df = pd.DataFrame({k: [ds[k].values.item()] for k in plain})
    for k, v in ds.data_vars.items():
        extra = [d for d in v.dims if d not in pdims]
        if k in plain or len(extra) != 1 or extra[0] in ("request", "step"):
            continue
        d = extra[0]
        labels = [str(x) for x in ds[d].values] if d in ds.coords else [str(i) for i in range(ds.sizes[d])]
        for j, lab in enumerate(labels):
            col = v.isel({d: j}).transpose(*[x for x in pdims if x in v.dims]).values.reshape(-1)
            df[f"{k}[{lab}]"] = col if pdims else col[:1]
    return df


def requests_table(ds):
    """One row per request of a run simulated with per-request variables."""
    names = [k for k, v in ds.data_vars.items() if v.dims == ("request",)]
    if not names:
        raise ValueError("this results file has no per-request variables; simulate with --per-request "
                         "(mistfast run SCENARIO --per-request -o results.nc)")
    df = ds[names].to_dataframe().reset_index()
    return df.rename(columns={"request": "request_index"})


def export(path: str | Path, fmt: str, output: str | Path | None = None, *, per_request: bool = False) -> Path:
    """Write the tidy table of ``path`` as CSV or Parquet; returns the file written."""
    import xarray as xr
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: allowed: {', '.join(FORMATS)}")
    path = Path(path)
    from .sweep import decode_reasons
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = decode_reasons(ds.load())
    df = requests_table(ds) if per_request else points_table(ds)
    out = Path(output) if output else path.with_name(path.stem + ("_requests" if per_request else "") + f".{fmt}")
    if fmt == "csv":
        df.to_csv(out, index=False)
    else:
        _write_parquet(df, ds, out)
    return out


def _write_parquet(df, ds, out: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--parquet needs pyarrow: pip install 'mistfast[export]' (or pip install pyarrow)") from None
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = []
    for f in table.schema:
        base = f.name.split("[")[0]
        attrs = ds[base].attrs if base in ds.variables else {}
        meta = {k: str(attrs[k]) for k in ("units", "long_name", "display_units") if k in attrs}
        fields.append(f.with_metadata(meta) if meta else f)
    pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), out)
