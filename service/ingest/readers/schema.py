"""Which Arrow column types a record's fields may have: those with a JSON form, checked from the
schema alone (a Parquet footer, an Arrow stream's first message) before any row is read."""
from __future__ import annotations

from ..errors import DatasetError
from .base import IMAGE_COLUMNS


def check_schema(schema) -> None:  # noqa: ANN001 - a pyarrow.Schema
    """DatasetError('unsupported_column') naming the first column no JSON value fits."""
    import pyarrow as pa

    names = [f.name for f in schema]
    for name in set(names):
        if names.count(name) > 1:
            raise DatasetError("unsupported_column", f"column {name!r} appears more than once", field=name)
    for field in schema:
        if field.name in IMAGE_COLUMNS:
            ok = _image_type(field.type, pa) or (_is_list(field.type, pa) and _image_type(field.type.value_type, pa))
            if not ok:
                raise DatasetError(
                    "unsupported_column", f"column {field.name!r} has type {field.type}; an image column holds a "
                    "path (string), HF's Image struct {bytes, path}, or a list of either", field=field.name)
        elif (bad := _non_json(field.type, pa)) is not None:
            raise DatasetError("unsupported_column", f"column {field.name!r} has type {field.type}, with {bad} "
                               "values, which have no JSON form; columns must hold strings, numbers, booleans, "
                               "lists or structs", field=field.name)


def _is_list(t, pa) -> bool:  # noqa: ANN001
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_string(t, pa) -> bool:  # noqa: ANN001
    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)


def _image_type(t, pa) -> bool:  # noqa: ANN001
    if pa.types.is_dictionary(t):
        t = t.value_type
    if _is_string(t, pa) or pa.types.is_null(t):
        return True
    if not pa.types.is_struct(t):
        return False
    kinds = {t.field(i).name: t.field(i).type for i in range(t.num_fields)}
    return (set(kinds) <= {"bytes", "path"} and "bytes" in kinds
            and (pa.types.is_binary(kinds["bytes"]) or pa.types.is_large_binary(kinds["bytes"]))
            and ("path" not in kinds or _is_string(kinds["path"], pa)))


def _non_json(t, pa) -> str | None:  # noqa: ANN001
    """None when every value of type `t` has a JSON form, else the offending type."""
    if pa.types.is_dictionary(t):
        return _non_json(t.value_type, pa)
    if (pa.types.is_null(t) or pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
            or _is_string(t, pa)):
        return None
    if _is_list(t, pa):
        return _non_json(t.value_type, pa)
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            if (bad := _non_json(t.field(i).type, pa)) is not None:
                return bad
        return None
    return str(t)
