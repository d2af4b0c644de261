"""Marshmallow fields that refuse what a careless or hostile client can send.

marshmallow's defaults are lenient: `Integer` takes "48" and 48.5 (stored as 48),
`Float` takes "1.5", and `List` loads every item before its `Length` validator runs,
so a list of 10⁶ bad items costs a minute of CPU and an error per item. These fields
say no at once.
They are torch-free and shared by `shared.spec` and `shared.jobspec`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, validate
from marshmallow import fields as mf


class StrictFloat(mf.Float):
    """A JSON number only: integers yes, a string of digits no.

    (For integers, `mf.Integer(strict=True)` refuses "48" and 48.5; marshmallow's
    Number already refuses booleans and answers overflow with an error.)"""

    def _validated(self, value: Any) -> float:
        if not isinstance(value, numbers.Real):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class BoundedList(mf.List):
    """A list whose length is checked before a single item is loaded.

    The bound comes from the field's `validate.Length`, which also gives the OpenAPI
    document its minItems/maxItems, so the documented and the enforced bound are one.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> list[Any]:
        if isinstance(value, list | tuple):
            for validator in self.validators:
                if isinstance(validator, validate.Length) and validator.max is not None \
                        and len(value) > validator.max:
                    raise ValidationError(
                        f"at most {validator.max} items, got {len(value)}")
        return super()._deserialize(value, attr, data, **kwargs)


def harden(field: mf.Field) -> mf.Field:
    """Make a plain marshmallow field strict in place, and return it.

    For schemas built from declarations we do not want to rewrite field by field
    (`shared.spec`): integers become strict, floats refuse strings, lists check their
    length first (items hardened too). The subclasses add behaviour, never state, so
    switching an instance's class to them is safe.
    """
    if isinstance(field, mf.Integer):
        field.strict = True
    elif isinstance(field, mf.Float) and not isinstance(field, StrictFloat):
        field.__class__ = StrictFloat
    elif isinstance(field, mf.List):
        if not isinstance(field, BoundedList):
            field.__class__ = BoundedList
        harden(field.inner)
    elif isinstance(field, mf.Dict) and field.value_field is not None:
        harden(field.value_field)
    return field
