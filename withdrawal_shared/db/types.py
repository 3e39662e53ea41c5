"""Column types. `IntegerAmount` round-trips exact integers on MySQL/MariaDB and SQLite."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, TypeDecorator, TypeEngine


class IntegerAmount(TypeDecorator[int]):
    """An integer of up to 65 digits: DECIMAL(65,0) on MySQL, text on SQLite. Never a float."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DECIMAL(precision=65, scale=0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"amounts are integers, got {type(value).__name__}")
        if abs(value) >= 10**65:
            raise ValueError("amount exceeds 65 digits")
        if dialect.name in {"mysql", "mariadb"}:
            return Decimal(value)
        return str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError(f"non-integer amount in the database: {value}")
            return int(value)
        if isinstance(value, int):
            return value
        return int(str(value))


def utc_datetime() -> DateTime:
    """Naive UTC timestamps with microseconds on MySQL (DATETIME(6))."""
    return DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
