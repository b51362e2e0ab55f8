"""Model adapters: find SAM, SAM 3 and CLIP models offline-first and load them behind protocols.

Names are imported from their modules on first use (see `terramask.lazy`), so importing the
package costs nothing until one of them is needed.
"""

from terramask.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "DEFAULT_MODELS": "registry",
        "KNOWN_MODELS": "registry",
        "ModelSpec": "registry",
        "ResolvedModel": "registry",
        "choose_device": "device",
        "choose_dtype": "device",
        "clear_loaded": "loader",
        "list_models": "registry",
        "load_concept_segmenter": "loader",
        "load_image_text": "loader",
        "load_segmenter": "loader",
        "pull_model": "registry",
        "resolve_model": "registry",
    },
)
