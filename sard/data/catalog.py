"""Dataset and metadata catalogs with detectron2's API.

When ``import detectron2`` succeeds these names ARE detectron2's catalogs, so anything
registered through ``sard`` is visible to detectron2 tools and vice versa. Otherwise a small
stand-in with the same calls is used:

* ``DatasetCatalog.register(name, func)``; ``get(name) -> func()``; ``list()``; ``remove(name)``
* ``MetadataCatalog.get(name)`` (created on first use) ``.set(**kw)``, attribute access,
  ``.get(key, default)``, ``.as_dict()``; setting an existing key to a different value raises.

``BOX_MODE_XYWH_ABS`` is detectron2's ``BoxMode.XYWH_ABS`` when available, else the int 1
(the same value, as BoxMode is an IntEnum).
"""

from __future__ import annotations

from collections import UserDict
from typing import Any, Callable, Dict, List

from sard.config.optional import detectron2_available

__all__ = ["BOX_MODE_XYWH_ABS", "DatasetCatalog", "HAS_DETECTRON2", "Metadata", "MetadataCatalog"]


class _DatasetCatalog(UserDict):
    """name -> zero-argument function returning a list of dataset dicts."""

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register ``func`` under ``name``; a name can be registered only once."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}, ...): func must be callable")
        if name in self:
            raise AssertionError(f"Dataset '{name}' is already registered!")
        self[name] = func

    def get(self, name: str) -> List[dict]:  # type: ignore[override]
        """Call the function registered under ``name`` and return its dataset dicts."""
        try:
            func = self[name]
        except KeyError as err:
            known = ", ".join(sorted(self.keys())) or "none"
            raise KeyError(
                f"Dataset '{name}' is not registered! Available datasets are: {known}"
            ) from err
        return func()

    def list(self) -> List[str]:
        """All registered names."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget ``name``."""
        self.pop(name)

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"

    __repr__ = __str__


class Metadata:
    """Attribute bag for one dataset; keys cannot silently change value once set."""

    def __init__(self, name: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_fields", {})

    def __getattr__(self, key: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if key in fields:
            return fields[key]
        name = object.__getattribute__(self, "name")
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{name}'. "
            f"Available keys are {sorted(fields)}."
        )

    def __setattr__(self, key: str, value: Any) -> None:
        fields = object.__getattribute__(self, "_fields")
        if key == "name":
            object.__setattr__(self, key, value)
            return
        if key in fields and fields[key] != value:
            raise AssertionError(
                f"Attribute '{key}' in the metadata of '{self.name}' cannot be set to a "
                f"different value!\n{fields[key]} != {value}"
            )
        fields[key] = value

    def set(self, **kwargs: Any) -> Metadata:
        """Set several attributes at once; returns self."""
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """Attribute ``key`` or ``default``."""
        return object.__getattribute__(self, "_fields").get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        """A copy of all attributes including ``name``."""
        return {"name": self.name, **object.__getattribute__(self, "_fields")}

    def __repr__(self) -> str:
        return f"Metadata({self.as_dict()})"


class _MetadataCatalog(UserDict):
    """name -> Metadata, created on first ``get``."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        """The metadata of ``name`` (an empty one is created if absent)."""
        if not name:
            raise ValueError("MetadataCatalog.get: dataset name must be a non-empty string")
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> List[str]:
        """All names that have metadata."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget the metadata of ``name``."""
        self.pop(name)


# A broken detectron2 install (importable, but not its data module) behaves as absent.
HAS_DETECTRON2 = detectron2_available()

if HAS_DETECTRON2:
    from detectron2.data import DatasetCatalog, MetadataCatalog  # type: ignore  # noqa: F401
    from detectron2.structures import BoxMode  # type: ignore

    BOX_MODE_XYWH_ABS: Any = BoxMode.XYWH_ABS
else:
    DatasetCatalog = _DatasetCatalog()  # type: ignore[assignment]
    MetadataCatalog = _MetadataCatalog()  # type: ignore[assignment]
    BOX_MODE_XYWH_ABS = 1
